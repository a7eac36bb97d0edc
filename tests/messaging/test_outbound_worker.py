"""The outbound worker's own checks and ordering, against a real dipsim over mutual TLS: the final
bytes validated against the schema registry before anything is signed, urgent messages first
without breaking business-key order, and a per-connection rate limit on a controlled clock."""

from __future__ import annotations

import copy

import httpx
import pytest

from core.tenancy import tenant_context
from messaging import credentials
from messaging.exceptions.models import MessageException
from messaging.models import DipExchange, Finding, Transition
from messaging.outbound import services as outbound
from tests.messaging.conftest import SDS_DIP_ID
from tests.messaging.test_outbound import (
    held_by_dipsim,
    outbound_channel,
    run_pipeline,
    states,
    submission,
)


@pytest.fixture(autouse=True)
def _fresh_pool():
    credentials.DIP_CLIENTS.clear()
    yield
    credentials.DIP_CLIENTS.clear()


@pytest.fixture(autouse=True)
def _no_faults(dipsim):
    httpx.delete(f"{dipsim.admin_url}/admin/faults")
    yield
    httpx.delete(f"{dipsim.admin_url}/admin/faults")


def test_final_bytes_failing_the_schema_are_rejected_for_the_client_and_never_sent(
    committed_world, dipsim
):
    world = committed_world
    tenant = world.globex.id
    channel = outbound_channel(tenant, dipsim)
    bad = submission(correlation_id="CI-BAD-SCHEMA")
    custom = copy.deepcopy(bad["custom_block"])
    custom["B044"]["issuingDataServiceDIPID"] = 12  # a number where the schema wants a DIP ID
    custom["B067"]["connectionTypeIndicator"] = None
    bad["custom_block"] = custom
    with tenant_context(tenant):
        ids = outbound.submit_messages(
            channel=channel, items=[submission(correlation_id="CI-GOOD"), bad], actor="crm"
        )
    before = len(held_by_dipsim(dipsim))
    report = run_pipeline(tenant, ids)

    assert states(tenant, ids) == ["sent", "rejected"]
    assert (report.sent, report.requests) == (1, 1)
    held = held_by_dipsim(dipsim)
    assert len(held) == before + 1
    with tenant_context(tenant):
        [exception] = MessageException.objects.filter(message_id=ids[1])
        rejected = Transition.objects.get(message_id=ids[1], to_state="rejected")
        exchanges = list(DipExchange.objects.filter(sender_references__len__gt=0))
        stored = Finding.objects.filter(message_id=ids[1], severity="fatal").count()
        reference = outbound.Message.objects.get(id=ids[1]).sender_unique_reference
    # Owned by the client, every problem listed with its JSON path.
    assert (exception.category, exception.to_act, exception.code) == (
        "data_quality",
        "client",
        "OUTBOUND-INVALID",
    )
    paths = sorted(p["path"] for p in exception.detail["problems"])
    assert any("B044" in p and "issuingDataServiceDIPID" in p for p in paths), paths
    assert rejected.from_state == "accepted"
    assert rejected.detail["problems"] == exception.detail["problems"]
    assert "issuingDataServiceDIPID" in rejected.reason
    assert stored >= 1
    # Its exact final bytes are kept as evidence, but no request carried them.
    assert reference
    assert not any(reference in e.sender_references for e in exchanges)
    assert reference not in {m["senderUniqueReference"] for m in held}
    assert SDS_DIP_ID in {m["sender"] for m in held}
