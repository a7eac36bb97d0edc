"""Replays that talk to the DIP, against a real dipsim over mutual TLS with signed calls: an
outbound replay resends a message the DIP never accepted under its own sender reference and one
it accepted as a new message under a new, recorded reference; a window request asks the DIP to
``/requeue`` or ``/replay`` a window of an inbound channel and records what the DIP answered."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter

import httpx
import pytest
from django.utils import timezone

from core.tenancy import tenant_context
from messaging import credentials
from messaging.exceptions.handling import Operator
from messaging.models import DipExchange, Message, Transition
from messaging.outbound import services as outbound
from messaging.replay import services as replay
from messaging.replay.models import Replay
from messaging.replay.tasks import execute_replay_task
from messaging.store import services as store
from tenants import certificates, services
from tenants.models import Connection
from tests.messaging.conftest import SUP_API_KEY, SUP_DIP_ID, Dipsim
from tests.messaging.test_inbound_e2e import (  # noqa: F401 (the stack fixture)
    ACME,
    _inject,
    _register,
    stack,
)
from tests.messaging.test_outbound import (
    fault,
    held_by_dipsim,
    outbound_channel,
    run_pipeline,
    submission,
)
from tests.messaging.test_reconciliation_dip import _held, _parked
from tests.waiting import wait_for


@pytest.fixture(autouse=True)
def _fresh_pool():
    credentials.DIP_CLIENTS.clear()
    yield
    credentials.DIP_CLIENTS.clear()


@pytest.fixture(autouse=True)
def _no_faults(request):
    """The module's dipsim is shared: no test leaves a fault behind (the stack has its own)."""
    if "dipsim" not in request.fixturenames:
        yield
        return
    admin = request.getfixturevalue("dipsim").admin_url
    httpx.delete(f"{admin}/admin/faults")
    yield
    httpx.delete(f"{admin}/admin/faults")


def _operator(world) -> Operator:
    return Operator("bob", world.bob.user.pk)


def test_outbound_replay_sends_an_accepted_message_anew_and_a_never_accepted_one_as_it_was(
    committed_world, dipsim
):
    world = committed_world
    tid = world.globex.id
    channel = outbound_channel(tid, dipsim)
    with tenant_context(tid):
        [accepted_id] = outbound.submit_messages(
            channel=channel, items=[submission(correlation_id="CI-REPLAY-ACCEPTED")], actor="crm"
        )
    assert run_pipeline(tid, [accepted_id]).sent == 1
    # The DIP refuses the credentials once: that message never reaches it and is parked.
    fault(dipsim, kind="error", channel="IF-021", remaining=1, params={"status": 403})
    with tenant_context(tid):
        [parked_id] = outbound.submit_messages(
            channel=channel, items=[submission(correlation_id="CI-REPLAY-PARKED")], actor="crm"
        )
    assert run_pipeline(tid, [parked_id]).failed == 1
    with tenant_context(tid):
        accepted = Message.objects.get(id=accepted_id)
        parked = Message.objects.get(id=parked_id)
    assert (accepted.state, bool(accepted.transaction_id)) == ("sent", True)
    assert (parked.state, parked.transaction_id) == ("failed", None)
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert held[accepted.sender_unique_reference] == 1
    assert held[parked.sender_unique_reference] == 0

    with tenant_context(tid):
        plan = replay.plan_replay(kind="outbound", message_ids=[accepted_id, parked_id])
        assert not plan.blocked
        idempotent = {c.message_id: c.status for c in plan.checks if c.check == "idempotent"}
        assert idempotent == {accepted_id: "warn", parked_id: "ok"}
        request = replay.request_replay(
            plan=plan,
            reason_code="market_party_request",
            reason_text="the supplier lost both",
            by=_operator(world),
        )
        assert request.state == "approved"  # UIT: approved by the rule, runs once requested
    # The worker task's body, in this process.
    assert execute_replay_task(str(tid), request.id) == "completed"

    with tenant_context(tid):
        done = Replay.objects.get(id=request.id)
        outcome = done.outcome["messages"]
        again = outcome[str(accepted_id)]
        new_id = again["new_message_id"]
        new = Message.objects.get(id=new_id)
    assert again["new_reference"] is True
    assert again["previous_reference"] == accepted.sender_unique_reference
    assert again["sender_unique_reference"] == new.sender_unique_reference
    assert new.sender_unique_reference not in ("", accepted.sender_unique_reference)
    assert outcome[str(parked_id)] == {
        "resent": True,
        "sender_unique_reference": parked.sender_unique_reference,
        "new_reference": False,
    }

    # What the send task does after commit: both go to dipsim.
    report = outbound.send_outbound(tenant_id=tid, message_ids=[new_id, parked_id])
    assert report.sent == 2
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert held[accepted.sender_unique_reference] == 1  # the original, not sent again
    assert held[new.sender_unique_reference] == 1  # the replay, under its new reference
    assert held[parked.sender_unique_reference] == 1  # the parked one, under its own
    by_reference = {m["senderUniqueReference"]: m for m in held_by_dipsim(dipsim)}
    assert by_reference[new.sender_unique_reference]["mpan"] == accepted.mpan

    with tenant_context(tid):
        sent = {m.id: m for m in Message.objects.filter(id__in=[accepted_id, parked_id, new_id])}
        assert sent[new_id].state == "sent"
        assert sent[new_id].transaction_id not in (None, "", accepted.transaction_id)
        assert sent[parked_id].state == "sent"
        assert sent[parked_id].sender_unique_reference == parked.sender_unique_reference
        assert all(m.replayed_at is not None for m in sent.values())
        note = Transition.objects.get(message_id=accepted_id, actor=f"replay {request.id}")
        assert new.sender_unique_reference in note.reason
        assert note.detail["replay"] == request.id
        origin = Transition.objects.get(message_id=new_id, actor=f"replay {request.id}")
        assert origin.detail["replay_of"] == accepted_id
        assert DipExchange.objects.filter(
            sender_references__contains=[new.sender_unique_reference], http_status=201
        ).exists()
    # A repeated task finds the replay done and sends nothing more.
    assert execute_replay_task(str(tid), request.id) == "completed"
    with tenant_context(tid):
        assert Message.objects.filter(channel_id=channel.id).count() == 3


def _inbound_connection(tenant_id: object, dipsim: Dipsim) -> Connection:
    """acme (the supplier) on dipsim with dipsim-issued credentials and an inbound IF-021."""
    with tenant_context(tenant_id):
        connection = Connection.objects.get(identity__dip_id=SUP_DIP_ID)
        services.update_connection(
            connection=connection, dip_base_url=dipsim.base_url, api_key=SUP_API_KEY, actor="t"
        )
        certificates.import_certificate(
            connection=connection,
            purpose="trust_anchor",
            data=dipsim.ca_cert.read_bytes(),
            actor="pytest",
        )
        for purpose, creds in (
            ("signing", (dipsim.sup.sign_cert, dipsim.sup.sign_key)),
            ("mtls", (dipsim.sup.mtls_cert, dipsim.sup.mtls_key)),
        ):
            staged = certificates.import_certificate(
                connection=connection,
                purpose=purpose,
                data=creds[0].read_bytes() + creds[1].read_bytes(),
                actor="pytest",
            )
            certificates.activate_first_certificate(certificate=staged, actor="pytest")
        if not connection.channels.filter(interface_id="IF-021", direction="inbound").exists():
            services.create_channel(
                connection=connection, interface_id="IF-021", direction="inbound", actor="pytest"
            )
        return Connection.objects.select_related("identity").get(id=connection.id)


def _store_inbound(tenant_id: object, connection_id: int, transaction_id: str) -> None:
    """Busbar already holds this DIP transaction (as if pushed)."""
    item = json.dumps({"payload": {"transactionID": transaction_id}}).encode()
    with tenant_context(tenant_id):
        store.store_inbound_delivery(
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
                    transaction_id=transaction_id,
                    interface_id="IF-021",
                    mpan=None,
                )
            ],
        )


def _requeued(dipsim: Dipsim) -> int:
    counters = httpx.get(f"{dipsim.admin_url}/admin/counters", timeout=10).json()["counters"]
    return int(counters.get("requeue.messages", 0))


def _held_for_acme(dipsim: Dipsim, start: dt.datetime, end: dt.datetime) -> list[str]:
    rows = httpx.get(
        f"{dipsim.admin_url}/admin/messages",
        params={"channel": "IF-021", "recipient": SUP_DIP_ID, "limit": 5000},
        timeout=10,
    ).json()
    return [
        row["transactionID"]
        for row in rows
        if start <= dt.datetime.fromisoformat(row["receivedAt"]) <= end
    ]


def _window_request(world, connection: Connection, kind: str, start, end) -> Replay:
    with tenant_context(world.acme.id):
        plan = replay.plan_window(
            kind=kind,
            connection=connection,
            interface_id="IF-021",
            window_from=start,
            window_to=end,
        )
        assert not plan.blocked
        request = replay.request_replay(
            plan=plan,
            reason_code="reconciliation_gap",
            reason_text="the daily reads of this window are missing",
            by=Operator("alice", world.alice.user.pk),
            selection={"window": [start.isoformat(), end.isoformat()]},
            interface_id="IF-021",
            window_from=start,
            window_to=end,
        )
        assert request.state == "approved"
        return request


def test_window_requests_ask_dipsim_to_requeue_and_replay_a_channel_and_record_its_answer(
    committed_world, dipsim
):
    world = committed_world
    acme = _inbound_connection(world.acme.id, dipsim)
    channel = outbound_channel(world.globex.id, dipsim)
    # dipsim's timestamps have whole seconds: the window starts a second before.
    start = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=1)
    with tenant_context(world.globex.id):
        ids = outbound.submit_messages(
            channel=channel,
            items=[submission(correlation_id=f"CI-WINDOW-{n}") for n in range(3)],
            actor="crm",
        )
    assert run_pipeline(world.globex.id, ids).sent == 3
    with tenant_context(world.globex.id):
        published = sorted(
            Message.objects.filter(id__in=ids).values_list("transaction_id", flat=True)
        )
    assert all(published)
    end = timezone.now() + dt.timedelta(minutes=1)
    # acme already holds the first one.
    _store_inbound(world.acme.id, acme.id, published[0])

    # The DIP's own record of the window (the module's other tests may have published to acme
    # within the same second as its start): these three and nothing outside it.
    in_window = _held_for_acme(dipsim, start, end)
    assert set(published) <= set(in_window)

    before = _requeued(dipsim)
    requeue = _window_request(world, acme, "dip_requeue", start, end)
    assert execute_replay_task(str(world.acme.id), requeue.id) == "completed"
    assert _requeued(dipsim) - before == len(in_window)  # the window's messages, pushed again
    for txn in published:
        detail = httpx.get(f"{dipsim.admin_url}/admin/messages/{txn}", timeout=10).json()
        to_acme = [d for d in detail["deliveries"] if d["recipient"] == SUP_DIP_ID]
        assert len(to_acme) == 2, detail  # the first push and the requeued one

    replayed = _window_request(world, acme, "dip_replay", start, end)
    assert execute_replay_task(str(world.acme.id), replayed.id) == "completed"
    assert _requeued(dipsim) - before == len(in_window)  # a replay only reads

    with tenant_context(world.acme.id):
        asked = Replay.objects.get(id=requeue.id)
        assert asked.outcome == {
            "verb": "requeue",
            "http_status": 200,
            "requeued": len(in_window),
        }
        answered = Replay.objects.get(id=replayed.id)
        assert answered.outcome == {
            "verb": "replay",
            "http_status": 200,
            "returned": len(in_window),
            "not_held": sorted(set(in_window) - {published[0]}),
        }
        assert set(published[1:]) <= set(answered.outcome["not_held"])
        exchanges = list(
            DipExchange.objects.filter(connection_id=acme.id).values_list(
                "operation", "http_status"
            )
        )
        assert exchanges.count(("requeue", 200)) == 1
        assert exchanges.count(("replay", 200)) == 1
        # A window request marks no message: nothing of Busbar's was sent again.
        assert not Message.objects.filter(replayed_at__isnull=False).exists()


def test_a_window_request_the_dip_refuses_is_recorded_as_failed(committed_world, dipsim):
    world = committed_world
    acme = _inbound_connection(world.acme.id, dipsim)
    start = timezone.now() - dt.timedelta(hours=1)
    end = timezone.now()
    fault(dipsim, kind="error", channel="IF-021", remaining=1, params={"status": 503})
    before = _requeued(dipsim)
    request = _window_request(world, acme, "dip_requeue", start, end)
    assert execute_replay_task(str(world.acme.id), request.id) == "failed"
    assert _requeued(dipsim) == before
    with tenant_context(world.acme.id):
        failed = Replay.objects.get(id=request.id)
        assert "503" in failed.outcome["error"], failed.outcome
        assert DipExchange.objects.filter(
            connection_id=acme.id, operation="requeue", http_status=503
        ).exists()


def test_a_requeue_window_request_has_the_dip_push_the_lost_messages_to_busbar_again(stack):  # noqa: F811
    """The whole way: dipsim pushes to Busbar's ingest server, which refuses the pushes (bad
    signatures) so dipsim parks them; the requeue window request has them pushed again, and
    they arrive in acme's store."""
    _register(stack)
    acme = stack.world.acme.id
    httpx.post(
        f"{stack.dipsim_admin}/admin/faults",
        json={"kind": "bad_signature", "direction": "egress", "dip_id": ACME},
        timeout=10,
    ).raise_for_status()
    start = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=1)
    lost = _inject(stack, ACME, 2)
    wait_for(lambda: len(_parked(stack.dipsim_admin)) >= 2, timeout=60, what="parked pushes")
    httpx.delete(f"{stack.dipsim_admin}/admin/faults", timeout=10).raise_for_status()
    assert _held(acme, lost) == set()
    end = timezone.now() + dt.timedelta(minutes=1)
    with tenant_context(acme):
        connection = Connection.objects.get(identity__dip_id=ACME)
    request = _window_request(stack.world, connection, "dip_requeue", start, end)
    assert execute_replay_task(str(acme), request.id) == "completed"
    wait_for(lambda: _held(acme, lost) == set(lost), timeout=60, what="the requeued messages")
    with tenant_context(acme):
        assert Replay.objects.get(id=request.id).outcome["requeued"] == 2
        assert DipExchange.objects.filter(operation="requeue", http_status=200).count() == 1
