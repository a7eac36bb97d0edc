"""The Reconciliation page: latest verdicts, the chart of runs, history; viewers see counts only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from core.tenancy import tenant_context
from messaging.reconciliation.models import Control
from messaging.reconciliation.services import run_reconciliation
from tenants import services
from tenants.models import Channel, Role
from tests.conftest import PASSWORD
from tests.messaging.test_reconciliation import receive


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def test_the_page_shows_each_controls_latest_verdict_with_what_is_missing(world):
    with tenant_context(world.acme.id):
        services.create_user(
            username="victor", email="v@acme.example", password=PASSWORD, roles=[Role.VIEWER]
        )
        if021 = Channel.objects.get()
        Channel.objects.filter(pk=if021.pk).update(expected_cadence=timedelta(hours=1))
        receive(if021, {"transaction_id": "R1", "mpan": "2000056535971"})
        run_reconciliation(controls=[Control.CADENCE, Control.DAILY_CONSUMPTION])
        run_reconciliation(
            controls=[Control.DAILY_CONSUMPTION],
            now=timezone.now() + timedelta(days=2),
        )
    page = signed_in("bob").get("/reconciliation/")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-control="cadence" data-status="ok"' in text
    assert 'data-control="daily_consumption" data-status="breach"' in text
    assert 'data-testid="reconciliation-chart"' in text
    assert "2000056535971" in text
    assert "Run the controls now" in text
    # A viewer sees the verdicts and counts, not the MPANs.
    viewer = signed_in("victor").get("/reconciliation/").content.decode()
    assert 'data-control="daily_consumption" data-status="breach"' in viewer
    assert "2000056535971" not in viewer
    assert "Run the controls now" not in viewer
    # Another tenant sees none of it.
    other = signed_in("charlie").get("/reconciliation/").content.decode()
    assert "data-control=" not in other
