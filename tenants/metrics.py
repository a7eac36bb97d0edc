"""Prometheus figures about tenants' credentials, read across tenants through the support role
(metadata only), at scrape time so they are never stale."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import connections
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


def _days_left_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "busbar_certificate_days_left",
        "Days until a certificate in use or staged expires (negative once expired).",
        labels=["tenant", "connection", "purpose", "status", "fingerprint"],
    )


class CertificateCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without describe(), registering would call collect() and query during app start-up.
        yield _days_left_family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        days_left = _days_left_family()
        try:
            with connections["support"].cursor() as cursor:
                cursor.execute(
                    """
                    SELECT t.slug, c.connection_id, c.purpose, c.status,
                           left(c.fingerprint_sha256, 16), c.not_after
                    FROM tenants_certificate c JOIN tenants_tenant t ON t.id = c.tenant_id
                    WHERE c.status IN ('active', 'staged', 'retiring') AND c.not_after IS NOT NULL
                    """
                )
                rows = cursor.fetchall()
        except Exception as exc:  # a scrape must not fail because one collector did
            logger.warning("metrics.certificates_unavailable", extra={"error": str(exc)})
            return
        now = timezone.now()
        for slug, connection_id, purpose, status, fingerprint, not_after in rows:
            days_left.add_metric(
                [slug, str(connection_id), purpose, status, fingerprint],
                round((not_after - now).total_seconds() / 86400, 2),
            )
        yield days_left
