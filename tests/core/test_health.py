from __future__ import annotations

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


def test_metrics_are_exposed_for_prometheus(db):
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert b"python_info" in response.content


def test_every_response_carries_a_request_id(db):
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="abc12345-trace")
    assert response["X-Request-ID"] == "abc12345-trace"
    assert len(Client().get("/healthz")["X-Request-ID"]) == 32
