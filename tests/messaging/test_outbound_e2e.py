"""Closing the loop end to end with the real processes: Busbar sends a message to dipsim over
mutual TLS, the recipient answers on the DIP's status channel with an RCP code, dipsim pushes that
status to Busbar's status webhook on the real ingest server (granian, client certificate
required), the outbound message's state moves, and a Celery worker tells the client system
through its signed downstream webhook (Standard Webhooks)."""

from __future__ import annotations

import json

import pytest
from standardwebhooks import Webhook

from core.tenancy import tenant_context
from messaging import credentials
from messaging.dip import status_entry
from messaging.events import endpoints
from messaging.models import Message, Transition
from messaging.outbound import services as outbound
from tenants import services
from tenants.models import Connection
from tests.messaging.receiver import running_receiver
from tests.messaging.test_inbound_e2e import ACME, GLOBEX, _log_tail, _register, stack
from tests.messaging.test_outbound import run_pipeline, submission
from tests.waiting import wait_for

__all__ = ["stack"]  # the real-process fixture, shared with the inbound end-to-end test


@pytest.fixture
def receiver(monkeypatch, settings):
    """The client system's webhook receiver, allowed on loopback in this process and in the
    worker the stack starts (it copies the environment)."""
    with running_receiver() as hook:
        monkeypatch.setenv("BUSBAR_DOWNSTREAM_ALLOW", hook.allow)
        settings.BUSBAR_DOWNSTREAM_ALLOW = hook.allow
        yield hook


@pytest.fixture
def live(receiver, request):
    return request.getfixturevalue("stack"), receiver


def test_a_dip_status_message_moves_the_sent_message_and_the_client_system_is_told(live):
    stack, hook = live
    _register(stack)  # includes each connection's status callback on Busbar's ingest server
    globex = stack.world.globex.id
    with tenant_context(globex):
        issued = endpoints.create_endpoint(
            name="crm", url=hook.url, event_types=["outbound.state_changed"], actor="e2e"
        )
        connection = Connection.objects.get(identity__dip_id=GLOBEX)
        channel = connection.channels.filter(
            interface_id="IF-021", direction="outbound"
        ).first() or services.create_channel(
            connection=connection, interface_id="IF-021", direction="outbound", actor="e2e"
        )
        ids = outbound.submit_messages(
            channel=channel,
            items=[
                submission(primary_recipients=[ACME], correlation_id="CI-E2E-OK"),
                submission(primary_recipients=[ACME], correlation_id="CI-E2E-REFUSED"),
            ],
            actor="crm",
        )
    credentials.DIP_CLIENTS.clear()
    assert run_pipeline(globex, ids).sent == 2
    with tenant_context(globex):
        sent = {m.id: m for m in Message.objects.filter(id__in=ids)}
    ok, refused = (sent[i] for i in ids)
    assert ok.transaction_id
    assert refused.transaction_id

    # The recipient (acme, the supplier) reports on the status channel, as the DIP's API has it.
    with tenant_context(stack.world.acme.id):
        acme = Connection.objects.select_related("identity").get(identity__dip_id=ACME)
        client = credentials.dip_client_for(connection=acme)
    with client:
        answer = client.send_status(
            [
                status_entry(
                    code="RCP0000",
                    text="Message Success",
                    sender_dip_id=ACME,
                    transaction_id=ok.transaction_id,
                ),
                status_entry(
                    code="RCP1061",
                    text="MPAN Invalid or Unknown",
                    sender_dip_id=ACME,
                    transaction_id=refused.transaction_id,
                ),
            ]
        )
    assert answer.status == 201, answer

    def moved() -> dict[int, str] | None:
        with tenant_context(globex):
            found = dict(Message.objects.filter(id__in=ids).values_list("id", "state"))
        return found if set(found.values()) == {"acknowledged", "rejected"} else None

    wait_for(moved, timeout=120, what=f"the status push; logs:\n{_log_tail(stack)}")
    assert moved() == {ok.id: "acknowledged", refused.id: "rejected"}
    with tenant_context(globex):
        acknowledged = Transition.objects.get(message_id=ok.id, to_state="acknowledged")
        rejection = Transition.objects.get(message_id=refused.id, to_state="rejected")
    assert (acknowledged.from_state, acknowledged.actor) == ("sent", "status")
    assert acknowledged.detail["code"] == "RCP0000"
    assert acknowledged.detail["from"] == ACME
    assert (rejection.detail["code"], rejection.detail["category"]) == ("RCP1061", "data_quality")

    def told() -> list[dict] | None:
        bodies = [json.loads(r.body) for r in hook.received]
        final = [b for b in bodies if b["data"]["state"] in ("acknowledged", "rejected")]
        return bodies if len(final) == 2 else None

    wait_for(told, timeout=120, what=f"the downstream webhooks; logs:\n{_log_tail(stack)}")
    by_state: dict[tuple[int, str], dict] = {}
    for request in hook.received:
        # Each one verifies against the endpoint's own secret (Standard Webhooks).
        body = Webhook(issued.secret).verify(request.body, request.headers)
        assert body["type"] == "outbound.state_changed"
        by_state[(body["data"]["message_id"], body["data"]["state"])] = body["data"]
    assert set(by_state) == {
        (ok.id, "sent"),
        (ok.id, "acknowledged"),
        (refused.id, "sent"),
        (refused.id, "rejected"),
    }
    assert by_state[(ok.id, "acknowledged")]["transaction_id"] == ok.transaction_id
    assert by_state[(refused.id, "rejected")]["correlation_id"] == "CI-E2E-REFUSED"
