from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
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
def test_metrics_are_served_to_a_scraper_with_the_token(settings):
    """Busbar's own families, in the exposition format Prometheus parses (not just the client
    library's process metrics, which any Python process would show)."""
    from prometheus_client.parser import text_string_to_metric_families

    settings.BUSBAR_METRICS_TOKEN = "scraper-token"
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scraper-token")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    days_left = families["busbar_certificate_days_left"]
    assert days_left.type == "gauge"
    assert "expir" in days_left.documentation.lower()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-the-token", "Basic c2NyYXBlci10b2tlbg==", "scraper-token"],
)
def test_metrics_refuse_anyone_without_the_token(db, settings, authorization):
    settings.BUSBAR_METRICS_TOKEN = "scraper-token"
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"python_info" not in response.content


def test_metrics_are_off_when_no_token_is_configured(db, settings):
    settings.BUSBAR_METRICS_TOKEN = None
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 403
    assert "BUSBAR_METRICS_TOKEN" in response.json()["detail"]
    assert b"python_info" not in response.content


def test_the_metrics_token_may_come_from_a_file(tmp_path, monkeypatch):
    from core.settings import env

    secret = tmp_path / "metrics-token"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("BUSBAR_METRICS_TOKEN_FILE", str(secret))
    assert env("BUSBAR_METRICS_TOKEN") == "from-a-file"


def test_every_response_carries_a_request_id(db):
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="abc12345-trace")
    assert response["X-Request-ID"] == "abc12345-trace"
    assert len(Client().get("/healthz")["X-Request-ID"]) == 32


ROOT = Path(__file__).resolve().parents[2]


def test_compose_publishes_nothing_beyond_the_hosts_loopback():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published = {
        name: service["ports"]
        for name, service in compose["services"].items()
        if "ports" in service
    }
    assert published, "web should still be reachable from the host"
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("${BUSBAR_PUBLISH_ADDRESS:-127.0.0.1}:"), (name, port)
    environment = compose["x-busbar-environment"]
    assert "BUSBAR_METRICS_TOKEN" in environment


def test_nginx_never_passes_metrics_on_from_outside():
    conf = (ROOT / "platform" / "nginx" / "busbar.conf").read_text()
    rule = re.search(r"location ~\* \^/\+metrics\(/\|\$\) \{\s*return 404;", conf)
    assert rule is not None
    pattern = re.compile(r"^/+metrics(/|$)", re.IGNORECASE)
    for path in ("/metrics", "/metrics/", "//metrics", "/METRICS"):
        assert pattern.search(path), path
    assert not pattern.search("/metricsboard")


def test_make_run_makes_a_metrics_token_and_prints_it(tmp_path, monkeypatch):
    from core import devenv

    monkeypatch.setattr(devenv, "VAR", tmp_path)
    first = devenv.load_secrets()
    assert len(first["metrics_token"]) >= 24
    assert devenv.load_secrets()["metrics_token"] == first["metrics_token"]  # kept across runs
    banner = devenv.demo_banner(
        url="http://127.0.0.1:8000/",
        logs=tmp_path,
        dip_url="https://127.0.0.1:8443",
        dip_admin="http://127.0.0.1:8444/",
        metrics_token=first["metrics_token"],
        ingest_url="https://127.0.0.1:8443",
    )
    assert f"Authorization: Bearer {first['metrics_token']}" in banner


def test_the_favicon_is_found(client):
    """Browsers ask for /favicon.ico on every site; a 404 there fills logs and shows no icon."""
    answer = client.get("/favicon.ico")
    assert answer.status_code == 301
    icon = client.get(answer["Location"])
    assert icon.status_code == 200
    assert icon["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(icon.streaming_content)
