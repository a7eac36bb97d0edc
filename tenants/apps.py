from __future__ import annotations

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        from tenants.metrics import CertificateCollector

        # ready() can run twice (tests, autoreload); a second registration would raise.
        if not any(isinstance(c, CertificateCollector) for c in REGISTRY._collector_to_names):
            REGISTRY.register(CertificateCollector())
