"""Replays: the checks come before anything moves, production needs a second person with the
approver role, every step is recorded (requester, approver, checks, messages, outcome) and the
replayed messages are marked; an inbound replay redelivers the same event ids, so a receiver
that dedupes on them sees no second effect."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import random

import pytest

from core.models import AuditEvent
from core.tenancy import tenant_context
from dipsim import messages as dip
from messaging.events import delivery, endpoints
from messaging.events import services as events
from messaging.events.models import Delivery, Event
from messaging.exceptions.handling import Operator
from messaging.models import Message, Transition
from messaging.replay import services as replay
from messaging.replay.models import Replay
from messaging.replay.services import ReplayRefused
from messaging.store import services as store
from tenants import services as tenant_services
from tenants.models import Connection, DipIdentity, Role
from tests.conftest import build_world
from tests.messaging.test_events_sampleclient import (  # noqa: F401 (a fixture)
    sample_client,
    stats,
)

_stored = itertools.count()


def delivered_inbound_message(tenant_id, connection_id: int, seed: int = 1) -> tuple[int, dict]:
    """An inbound IF-021 in the store, validated and normalised into its events (the real
    services, with the validation step's move done directly)."""
    rng = random.Random(seed)
    payload = dip.if021(
        sender="1000000002", mpan=dip.make_mpan(rng), day=dt.date(2026, 11, 1), rng=rng
    )
    item = json.dumps({"payload": payload}).encode()
    with tenant_context(tenant_id):
        stored = store.store_inbound_delivery(
            tenant_id=tenant_id,
            connection_id=connection_id,
            channel_id=None,
            body=b"[" + item + b"]",
            headers={},
            messages=[
                store.InboundMessageFacts(
                    offset=1,
                    length=len(item),
                    sha256=hashlib.sha256(item).digest(),
                    transaction_id=f"T-REPLAY-{seed}-{next(_stored)}",
                    interface_id="IF-021",
                    mpan=payload["CommonBlock"]["M0"]["MPANCore"],
                )
            ],
        )
        [message_id] = stored.message_ids
        store.transition(
            tenant_id=tenant_id, message_ids=[message_id], from_state="received",
            to_state="valid", actor="pytest", direction="inbound",
        )  # fmt: skip
        events.record_events(tenant_id=tenant_id, messages=[(message_id, payload)])
        store.transition(
            tenant_id=tenant_id, message_ids=[message_id], from_state="valid",
            to_state="normalised", actor="pytest", direction="inbound",
        )  # fmt: skip
    return message_id, payload


def production_connection(tenant_id) -> Connection:
    with tenant_context(tenant_id):
        return tenant_services.create_connection(
            identity=DipIdentity.objects.get(),
            environment="PRD",
            dip_base_url="https://dip.example",
            api_key="acme-prd-api-key-789",
        )


def approver(tenant_id, username: str = "petra"):
    with tenant_context(tenant_id):
        return tenant_services.create_user(
            username=username,
            email=f"{username}@acme.example",
            password="x" * 16,
            roles=[Role.APPROVER],
        )


def test_a_production_replay_without_approval_is_refused_and_an_approved_one_recorded(
    committed_db, settings
):
    world = build_world()
    tid = world.acme.id
    prd = production_connection(tid)
    message_id, _ = delivered_inbound_message(tid, prd.id)
    petra = approver(tid)
    bob = Operator("bob", world.bob.user.pk)
    with tenant_context(tid):
        endpoints.create_endpoint(
            name="billing", url="https://93.184.216.34/hooks", event_types=["*"], actor="pytest"
        )
        plan = replay.plan_replay(kind="inbound", message_ids=[message_id])
        assert plan.production
        assert not plan.blocked
        assert {c.check for c in plan.checks} == {
            "idempotent", "partial", "superseded", "approval",
        }  # fmt: skip
        with pytest.raises(ReplayRefused, match="reason code"):
            replay.request_replay(plan=plan, reason_code="because", reason_text="x", by=bob)
        with pytest.raises(ReplayRefused, match="say why"):
            replay.request_replay(plan=plan, reason_code="downstream_outage", reason_text=" ",
                                  by=bob)  # fmt: skip
        request = replay.request_replay(
            plan=plan,
            reason_code="downstream_outage",
            reason_text="billing lost yesterday's events",
            by=bob,
        )
        assert request.state == "pending"
    # Nothing runs without approval, whoever calls it.
    with pytest.raises(ReplayRefused, match="not been approved"):
        replay.execute_replay(tenant_id=tid, replay_id=request.id)
    with tenant_context(tid):
        deliveries_before = list(Delivery.objects.values_list("id", "state", "attempts"))
        # Four eyes: not the requester, and only an approver.
        with pytest.raises(ReplayRefused, match="four eyes"):
            replay.approve_replay(replay_id=request.id, by=bob)
        with pytest.raises(ReplayRefused, match="approver role"):
            replay.approve_replay(replay_id=request.id, by=Operator("alice", world.alice.user.pk))
        assert Replay.objects.get(id=request.id).state == "pending"
        assert list(Delivery.objects.values_list("id", "state", "attempts")) == deliveries_before
        assert Message.objects.get(id=message_id).replayed_at is None
        replay.approve_replay(replay_id=request.id, by=Operator("petra", petra.pk), note="ok")
    done = replay.execute_replay(tenant_id=tid, replay_id=request.id)
    assert done is not None
    assert done.state == "completed"
    with tenant_context(tid):
        recorded = Replay.objects.get(id=request.id)
        assert (recorded.requested_by, recorded.decided_by) == ("bob", "petra")
        assert recorded.message_ids == [message_id]
        assert recorded.checks == [c.__dict__ for c in plan.checks]
        event_ids = [e.webhook_id for e in Event.objects.filter(source_message_id=message_id)]
        assert recorded.outcome["messages"][str(message_id)]["events"] == event_ids
        assert Message.objects.get(id=message_id).replayed_at is not None
        note = Transition.objects.filter(message_id=message_id, actor=f"replay {request.id}").get()
        assert note.detail["approved_by"] == "petra"
        actions = set(
            AuditEvent.objects.filter(object_type="replay", object_id=str(request.id)).values_list(
                "action", flat=True
            )
        )
        assert actions == {"replay.requested", "replay.approved", "replay.completed"}
    # Running it again does nothing more.
    again = replay.execute_replay(tenant_id=tid, replay_id=request.id)
    assert again is not None
    assert again.completed_at == done.completed_at


def test_a_refused_replay_moves_nothing_and_says_who_refused(committed_db):
    world = build_world()
    tid = world.acme.id
    prd = production_connection(tid)
    message_id, _ = delivered_inbound_message(tid, prd.id)
    petra = approver(tid)
    with tenant_context(tid):
        endpoints.create_endpoint(
            name="billing", url="https://93.184.216.34/hooks", event_types=["*"], actor="pytest"
        )
        plan = replay.plan_replay(kind="inbound", message_ids=[message_id])
        request = replay.request_replay(
            plan=plan,
            reason_code="other",
            reason_text="test",
            by=Operator("bob", world.bob.user.pk),
        )
        replay.refuse_replay(
            replay_id=request.id, by=Operator("petra", petra.pk), note="the receiver has them"
        )
        with pytest.raises(ReplayRefused, match="refused, not pending"):
            replay.approve_replay(replay_id=request.id, by=Operator("petra", petra.pk))
        assert AuditEvent.objects.filter(action="replay.refused", object_id=str(request.id)).get()
        assert Message.objects.get(id=message_id).replayed_at is None
    assert replay.execute_replay(tenant_id=tid, replay_id=request.id).state == "refused"


def test_replaying_a_processed_inbound_message_has_no_second_downstream_effect(
    committed_db,
    settings,
    sample_client,  # noqa: F811
):
    """The sample client dedupes on webhook-id; the replay sends the same ids again, so it
    counts duplicates and nothing new."""
    port, secret = sample_client
    world = build_world()
    tid = world.acme.id
    settings.BUSBAR_DOWNSTREAM_ALLOW = f"127.0.0.1:{port}"
    with tenant_context(tid):
        endpoints.create_endpoint(
            name="sample", url=f"http://127.0.0.1:{port}/hooks", event_types=["*"],
            actor="pytest", secret=secret,
        )  # fmt: skip
        connection = Connection.objects.get()
    message_id, _ = delivered_inbound_message(tid, connection.id)
    first = delivery.deliver_due(tenant_id=tid).delivered
    assert first >= 1
    before = stats(port)
    assert before["received"] == first
    assert before["duplicates"] == 0
    with tenant_context(tid):
        assert Message.objects.get(id=message_id).state == "delivered"
        plan = replay.plan_replay(kind="inbound", message_ids=[message_id])
        assert not plan.production  # UIT: runs once requested, approved by the rule
        request = replay.request_replay(
            plan=plan, reason_code="downstream_data_loss", reason_text="check dedupe",
            by=Operator("bob", world.bob.user.pk),
        )  # fmt: skip
        assert request.state == "approved"
    replay.execute_replay(tenant_id=tid, replay_id=request.id)
    assert delivery.deliver_due(tenant_id=tid).delivered == first  # sent again, same ids
    after = stats(port)
    assert after["received"] == before["received"]  # no second effect
    assert after["duplicates"] == first  # every event arrived again and was recognised
    with tenant_context(tid):
        assert Replay.objects.get(id=request.id).state == "completed"


def test_the_checks_say_what_they_find_and_a_blocking_one_stops_the_request(committed_db):
    world = build_world()
    tid = world.acme.id
    with tenant_context(tid):
        connection = Connection.objects.get()
    older, _ = delivered_inbound_message(tid, connection.id, seed=7)
    newer, _ = delivered_inbound_message(tid, connection.id, seed=7)  # same MPAN, later
    with tenant_context(tid):
        plan = replay.plan_replay(kind="inbound", message_ids=[older])
        superseded = [c for c in plan.checks if c.check == "superseded"]
        assert superseded[0].status == "warn"
        assert str(newer) in superseded[0].text
        # No endpoint to deliver to: blocked, and the request is refused with the reason.
        assert plan.blocked
        with pytest.raises(ReplayRefused, match="no enabled downstream endpoint"):
            replay.request_replay(
                plan=plan, reason_code="other", reason_text="x",
                by=Operator("bob", world.bob.user.pk),
            )  # fmt: skip
        assert not Replay.objects.exists()
        with pytest.raises(ReplayRefused, match="not outbound"):
            replay.plan_replay(kind="outbound", message_ids=[older])
    with tenant_context(world.globex.id), pytest.raises(ReplayRefused, match="no such message"):
        replay.plan_replay(kind="inbound", message_ids=[older])
