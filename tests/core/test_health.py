from __future__ import annotations

import pytest
from django.test import Client


def test_healthz_answers_without_touching_anything(db):
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_migrations_broker_and_cache(db):
    response = Client().get("/readyz")
    assert response.json()["checks"] == {
        "database": "ok",
        "migrations": "ok",
        "broker": "ok",
        "cache": "ok",
    }
    assert response.status_code == 200


def test_readyz_reports_an_unreachable_broker(db, settings):
    from core.celery import app

    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = Client().get("/readyz")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] != "ok"


@pytest.mark.django_db(databases=["default", "support"])  # the certificate collector's role
def test_metrics_are_exposed_for_prometheus():
    """Busbar's own families, in the exposition format Prometheus parses (not just the client
    library's process metrics, which any Python process would show)."""
    from prometheus_client.parser import text_string_to_metric_families

    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    days_left = families["busbar_certificate_days_left"]
    assert days_left.type == "gauge"
    assert "expir" in days_left.documentation.lower()


def test_every_response_carries_a_request_id(db):
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="abc12345-trace")
    assert response["X-Request-ID"] == "abc12345-trace"
    assert len(Client().get("/healthz")["X-Request-ID"]) == 32
