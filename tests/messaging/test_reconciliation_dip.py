"""Busbar's record against the DIP's, with the real processes: dipsim (mutual TLS, signed calls)
holds messages for acme that never reached Busbar; the reconciliation control finds them through
``/replay`` and has them pushed again through ``/requeue``, and they arrive."""

from __future__ import annotations

from datetime import timedelta

import httpx
from django.utils import timezone

from core.tenancy import tenant_context
from messaging.models import DipExchange, Message
from messaging.reconciliation.models import Control, ResultStatus
from messaging.reconciliation.services import run_reconciliation
from tests.messaging.test_inbound_e2e import (  # noqa: F401 (the stack fixture)
    ACME,
    _inject,
    _register,
    stack,
)
from tests.waiting import wait_for


def _parked(admin: str) -> list[dict]:
    rows = httpx.get(
        f"{admin}/admin/deliveries", params={"state": "parked", "recipient": ACME}, timeout=10
    ).json()
    return [row for row in rows if row.get("kind") == "message"]


def _held(tenant_id: object, txns: list[str]) -> set[str]:
    with tenant_context(tenant_id):
        return set(
            Message.objects.filter(transaction_id__in=txns).values_list("transaction_id", flat=True)
        )


def test_a_gap_between_busbar_and_the_dip_is_found_by_replay_and_filled_by_requeue(stack):  # noqa: F811
    _register(stack)
    # The DIP's pushes to acme fail Busbar's signature check, so dipsim parks them: the DIP
    # holds three messages for acme that Busbar never stored.
    httpx.post(
        f"{stack.dipsim_admin}/admin/faults",
        json={"kind": "bad_signature", "direction": "egress", "dip_id": ACME},
        timeout=10,
    ).raise_for_status()
    lost = _inject(stack, ACME, 3)
    wait_for(lambda: len(_parked(stack.dipsim_admin)) >= 3, timeout=60, what="parked pushes")
    httpx.delete(f"{stack.dipsim_admin}/admin/faults", timeout=10).raise_for_status()
    acme = stack.world.acme.id
    assert _held(acme, lost) == set()

    # Past the settling margin, so the control's window covers what was just published.
    later = timezone.now() + timedelta(minutes=5)
    with tenant_context(acme):
        (verdict,) = run_reconciliation(controls=[Control.DIP_RECORD], now=later)
        assert verdict.status == ResultStatus.FILLED, verdict.summary
        assert (verdict.expected, verdict.found) == (3, 0)
        assert sorted(verdict.detail["missing_transaction_ids"]) == sorted(lost)
        assert verdict.detail["requeued"] == 3
        operations = list(DipExchange.objects.values_list("operation", "http_status"))
        assert ("replay", 200) in operations
        assert ("requeue", 200) in operations

    wait_for(lambda: _held(acme, lost) == set(lost), timeout=60, what="the requeued messages")

    with tenant_context(acme):
        (verdict,) = run_reconciliation(
            controls=[Control.DIP_RECORD], now=timezone.now() + timedelta(minutes=5)
        )
        assert verdict.status == ResultStatus.OK, verdict.summary
        assert (verdict.expected, verdict.found) == (3, 3)
    # globex holds nothing of acme's, and its own record matches the DIP's.
    with tenant_context(stack.world.globex.id):
        (verdict,) = run_reconciliation(
            controls=[Control.DIP_RECORD], now=timezone.now() + timedelta(minutes=5)
        )
        assert (verdict.status, verdict.expected) == (ResultStatus.OK, 0)
