"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.celery import app

logger = logging.getLogger(__name__)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Checks nothing else, so a database outage never restarts it."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return None


def _check_migrations() -> str | None:
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return f"{len(pending)} migration(s) not applied" if pending else None


def _check_broker() -> str | None:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return None


def _check_cache() -> str | None:
    cache.set("busbar:readyz", "1", timeout=10)
    return None if cache.get("busbar:readyz") == "1" else "cache did not return what was written"


CHECKS = {
    "database": _check_database,
    "migrations": _check_migrations,
    "broker": _check_broker,
    "cache": _check_cache,
}


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 only when the database, migrations, broker and cache all answer."""
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            problem = check()
        except Exception as exc:  # a readiness probe reports every failure, whatever it is
            logger.warning("readyz.check_failed", extra={"check": name, "error": str(exc)})
            problem = f"{type(exc).__name__}: {exc}"
        results[name] = problem or "ok"
    ready = all(value == "ok" for value in results.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": results},
        status=200 if ready else 503,
    )


def _metrics_token_presented(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus figures, for a scraper holding ``BUSBAR_METRICS_TOKEN`` as a bearer token.

    The figures name tenants, connections and certificate fingerprints, so nobody else gets any
    of them; with no token configured the endpoint is off (fail closed), not open.
    """
    expected = settings.BUSBAR_METRICS_TOKEN
    if not expected:
        return JsonResponse(
            {"detail": "metrics are off: set BUSBAR_METRICS_TOKEN to serve them"}, status=403
        )
    presented = _metrics_token_presented(request)
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        response = JsonResponse(
            {"detail": "metrics need Authorization: Bearer <BUSBAR_METRICS_TOKEN>"}, status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="busbar-metrics"'
        return response
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
