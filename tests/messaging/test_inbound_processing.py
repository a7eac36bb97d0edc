"""Processing stored inbound messages: bulk validation, idempotent state moves, categorised
exceptions, poison messages parked, the sweeper's handler, and refusals reported to the DIP."""

from __future__ import annotations

import gc

import httpx
import pytest

from core.tenancy import tenant_context
from messaging.events.models import Event
from messaging.exceptions.models import MessageException
from messaging.inbound import processing, receive, status
from messaging.inbound.tasks import process_delivery_task
from messaging.models import DipExchange, Finding, Message, Transition
from messaging.store.services import claim_due
from messaging.store.sweeper import registered_handlers
from tests.messaging.inbound_helpers import (
    BASE_URL,
    DipSigner,
    body_of,
    inbound_channel,
    pushed_if021,
    sup_connection,
    trust,
)
from tests.messaging.test_dip_client import if021


@pytest.fixture
def push(world, settings):
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    receive.forget_endpoints()
    channel = inbound_channel(world.acme.id)
    signer = DipSigner()
    trust(world.acme.id, channel.connection, signer.ca)
    url = f"{BASE_URL}/dip/webhooks/{channel.webhook_token}"

    def send(*messages):
        body = body_of(*messages)
        answer = receive.receive_push(
            token=channel.webhook_token, url=url, headers=signer.headers(url, body), body=body
        )
        assert answer.status == 201, answer.body
        return answer.delivery_id

    yield send
    receive.forget_endpoints()


def _states(tenant_id):
    with tenant_context(tenant_id):
        return dict(Message.objects.values_list("transaction_id", "state"))


def _txn(message):
    return message["payload"]["CommonBlock"]["D0"]["transactionID"]


def test_a_delivery_is_validated_in_bulk_and_running_it_twice_changes_nothing(
    push, world, django_capture_on_commit_callbacks
):
    good, wrong_env = pushed_if021(), pushed_if021(environment="PRD")
    raw_id = push(good, wrong_env)
    with django_capture_on_commit_callbacks() as callbacks:
        first = processing.process_delivery(tenant_id=world.acme.id, raw_id=raw_id)
    again = processing.process_delivery(tenant_id=world.acme.id, raw_id=raw_id)
    assert len(first.valid) == 1
    assert len(first.invalid) == 1
    assert again.total == 0  # nothing left in received: a repeated task does nothing
    assert first.normalised == first.valid  # its consumption event is recorded
    assert _states(world.acme.id) == {_txn(good): "normalised", _txn(wrong_env): "invalid"}
    assert len(callbacks) == 1  # the refusal goes back to the DIP after commit
    with tenant_context(world.acme.id):
        assert Transition.objects.count() == 3  # received->valid->normalised, received->invalid
        assert Event.objects.filter(source_message_id__in=first.valid).exists()
        findings = list(Finding.objects.values_list("code", "severity"))
        [exception] = MessageException.objects.all()
    assert ("CTX-ENVIRONMENT", "fatal") in findings
    assert exception.code == "CTX-ENVIRONMENT"
    assert exception.category == "market_operations"
    assert exception.to_act == "market_party"
    assert exception.owner_queue == "market-operations"
    assert exception.detail["rcp"] == "RCP1004"
    assert exception.transaction_id == _txn(wrong_env)


def test_a_round_runs_with_the_collector_paused(push, world, monkeypatch):
    seen = []
    validate = processing.validate_messages

    def spy(**kwargs):
        seen.append(gc.isenabled())
        return validate(**kwargs)

    monkeypatch.setattr(processing, "validate_messages", spy)
    raw_id = push(pushed_if021())
    assert gc.isenabled()
    report = processing.process_delivery(tenant_id=world.acme.id, raw_id=raw_id)
    assert len(report.normalised) == 1
    assert seen == [False]
    assert gc.isenabled()


def test_the_task_runs_the_same_service_and_is_idempotent(push, world):
    raw_id = push(pushed_if021(), pushed_if021())
    assert process_delivery_task.run(str(world.acme.id), raw_id) == {
        "valid": 2,
        "awaiting": 0,
        "invalid": 0,
        "parked": 0,
        "normalised": 2,
    }
    assert process_delivery_task.run(str(world.acme.id), raw_id) == {
        "valid": 0,
        "awaiting": 0,
        "invalid": 0,
        "parked": 0,
        "normalised": 0,
    }


def test_a_message_that_keeps_killing_its_worker_is_parked_with_an_exception(push, world, settings):
    settings.BUSBAR_INBOUND_MAX_ATTEMPTS = 2
    message = pushed_if021()
    push(message)
    with tenant_context(world.acme.id):
        [mid] = Message.objects.values_list("id", flat=True)
        for _ in range(2):  # two claims whose workers died (leases expire at once)
            claim_due(
                tenant_id=world.acme.id,
                direction="inbound",
                state="received",
                limit=1,
                lease_seconds=-1,  # expired at once: now() is fixed in a transaction
                message_ids=[mid],
            )
    report = processing.process_messages(tenant_id=world.acme.id, message_ids=[mid])
    assert report.parked == [mid]
    assert _states(world.acme.id) == {_txn(message): "failed"}
    with tenant_context(world.acme.id):
        exception = MessageException.objects.get(message_id=mid)
    assert exception.code == "INBOUND-POISON"
    assert exception.category == "technical"
    assert exception.to_act == "provider"


def test_the_sweeper_knows_how_to_resume_received_messages():
    handler = next(
        h for h in registered_handlers() if (h.direction, h.state) == ("inbound", "received")
    )
    assert handler.park is not None
    assert handler.max_attempts == processing.max_attempts()


def test_refusals_are_reported_to_the_dip_once(world, dipsim, settings):
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    connection = sup_connection(world.acme.id, dipsim)
    receive.forget_endpoints()
    channel = inbound_channel(world.acme.id)
    url = f"{BASE_URL}/dip/webhooks/{channel.webhook_token}"
    signer = DipSigner()
    trust(world.acme.id, connection, signer.ca)
    # A message the DIP really carried (injected into dipsim), so its transaction id is known.
    injected = httpx.post(f"{dipsim.admin_url}/admin/inject/IF-021", json=[{"payload": if021()}])
    assert injected.status_code == 201, injected.text
    transaction_id = injected.json()["messageArray"][0]["transactionID"]
    pushed = pushed_if021(environment="PRD", transaction_id=transaction_id)
    body = body_of(pushed)
    answer = receive.receive_push(
        token=channel.webhook_token, url=url, headers=signer.headers(url, body), body=body
    )
    report = processing.process_delivery(tenant_id=world.acme.id, raw_id=answer.delivery_id)
    assert len(report.invalid) == 1
    assert status.send_refusal_status(tenant_id=world.acme.id, message_ids=report.invalid) == 1
    assert status.send_refusal_status(tenant_id=world.acme.id, message_ids=report.invalid) == 0
    with tenant_context(world.acme.id):
        [exchange] = DipExchange.objects.filter(operation="status")
    assert exchange.http_status == 201
    assert exchange.transaction_ids == [transaction_id]


def test_a_delivery_whose_task_was_lost_is_found_by_the_sweeper_and_processed(
    push, world, django_capture_on_commit_callbacks
):
    """The web process died after its commit and before the enqueue (or Redis lost the task):
    the stored messages wait in ``received`` until the beat sweeper hands them to a worker."""
    from unittest import mock

    from messaging.inbound import tasks
    from messaging.store.sweeper import sweep_tenant

    message = pushed_if021()
    push(message)  # stored and acknowledged; no task was ever enqueued
    with (
        mock.patch.object(
            tasks.process_messages_task,
            "delay",
            side_effect=lambda tenant, ids: tasks.process_messages_task.run(tenant, ids),
        ) as enqueued,
        django_capture_on_commit_callbacks(execute=True),
    ):
        report = sweep_tenant(tenant_id=world.acme.id, grace_seconds=-1)
    assert report.enqueued == {"inbound/received": 1}
    enqueued.assert_called_once()
    assert _states(world.acme.id) == {_txn(message): "normalised"}


def test_a_message_that_follows_another_waits_for_it_and_is_released_when_it_arrives(world):
    """IF-036 (appointment confirmed) for an MPAN waits in ``awaiting`` with an
    awaiting-dependency exception until the IF-035 for that MPAN is held."""
    import hashlib

    from messaging.exceptions.services import ExceptionSpec, raise_exceptions
    from messaging.store.services import InboundMessageFacts, store_inbound_delivery, transition

    def store(interface_id: str, txn: str) -> int:
        body = b'[{"payload":{}}]'
        with tenant_context(world.acme.id):
            connection = inbound_channel(world.acme.id).connection
            stored = store_inbound_delivery(
                tenant_id=world.acme.id,
                connection_id=connection.pk,
                channel_id=None,
                body=body,
                headers={},
                messages=[
                    InboundMessageFacts(
                        offset=1,
                        length=14,
                        sha256=hashlib.sha256(txn.encode()).digest(),
                        transaction_id=txn,
                        interface_id=interface_id,
                        mpan="1900012374324",
                    )
                ],
            )
        return stored.message_ids[0]

    confirmation = store("IF-036", "T-36")
    with tenant_context(world.acme.id):
        rows = list(Message.objects.filter(id=confirmation))
        waits = processing._unmet_dependencies(rows)
        assert waits == {confirmation: "IF-035|1900012374324"}
        transition(
            tenant_id=world.acme.id,
            message_ids=[confirmation],
            from_state="received",
            to_state="awaiting",
            actor="t",
            direction="inbound",
        )
        raise_exceptions(
            specs=[
                ExceptionSpec(
                    code="AWAITING-IF-035",
                    title="waits",
                    category="awaiting_dependency",
                    message_id=confirmation,
                    dependency_key=waits[confirmation],
                )
            ]
        )
        acceptance = store("IF-035", "T-35")
        transition(
            tenant_id=world.acme.id,
            message_ids=[acceptance],
            from_state="received",
            to_state="valid",
            actor="t",
            direction="inbound",
        )
        assert processing._unmet_dependencies(rows) == {}  # IF-035 is now held
        released = processing.release_awaiting(
            tenant_id=world.acme.id, keys={"IF-035|1900012374324"}
        )
        assert released == [confirmation]
        assert Message.objects.get(id=confirmation).state == "valid"
        assert MessageException.objects.get(message_id=confirmation).state == "resolved"


def _sent_at(message, moment):
    """``message`` re-dated: its sender timestamp (the business key's version) set to ``moment``."""
    import datetime as dt

    s1 = message["payload"]["CommonBlock"]["S1"]
    s1["senderTimestamp"] = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return message


def _history_codes(tenant_id, transaction_id):
    with tenant_context(tenant_id):
        mid = Message.objects.get(transaction_id=transaction_id).id
        return sorted(
            Finding.objects.filter(message_id=mid, code__in=_HISTORY_CODES).values_list(
                "code", "severity"
            )
        )


_HISTORY_CODES = ("CTX-DUPLICATE", "CTX-OUT-OF-ORDER", "CTX-VERSION-CONFLICT")


def test_the_business_key_history_flags_late_and_repeated_messages_across_deliveries(push, world):
    """Each delivery is processed on its own; the history of keys and versions kept per
    connection lets a later delivery's contextual stage see what earlier ones held."""
    import copy
    import datetime as dt

    from messaging.validation.models import KeyVersion

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    mpan = "2000056535971"
    first = _sent_at(pushed_if021(mpan=mpan), now - dt.timedelta(hours=2))
    newer = _sent_at(pushed_if021(mpan=mpan), now - dt.timedelta(hours=1))
    late = _sent_at(pushed_if021(mpan=mpan), now - dt.timedelta(hours=3))
    # The DIP's transaction id is new, the sender's reference is the one already received.
    resent = copy.deepcopy(newer)
    resent["payload"]["CommonBlock"]["D0"]["transactionID"] = _txn(newer) + "R"
    other_meter = _sent_at(pushed_if021(mpan="2000056535980"), now - dt.timedelta(hours=4))
    for message in (first, newer, late, resent, other_meter):
        report = processing.process_delivery(tenant_id=world.acme.id, raw_id=push(message))
        assert report.normalised, "a warning never stops a message"
    assert _history_codes(world.acme.id, _txn(first)) == []
    assert _history_codes(world.acme.id, _txn(newer)) == []  # in order: no finding
    assert _history_codes(world.acme.id, _txn(late)) == [("CTX-OUT-OF-ORDER", "warning")]
    assert _history_codes(world.acme.id, _txn(resent)) == [("CTX-DUPLICATE", "warning")]
    assert _history_codes(world.acme.id, _txn(other_meter)) == []  # another key: no history
    with tenant_context(world.acme.id):
        held = dict(KeyVersion.objects.values_list("key", "version"))
    # The late message did not move its key back: the newest version stays the one compared.
    day = first["payload"]["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][0]
    [key] = [k for k in held if k.startswith(f"IF-021|{mpan}|")]
    assert key.endswith(day["settlementDay"]["settlementDayDate"][:10])
    assert held[key] == (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tenant_context(world.globex.id):
        assert not KeyVersion.objects.exists()  # history is the tenant's own


def test_one_batch_reads_the_history_once_and_orders_within_itself(push, world):
    import datetime as dt

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    earlier = _sent_at(pushed_if021(), now - dt.timedelta(hours=2))
    processing.process_delivery(tenant_id=world.acme.id, raw_id=push(earlier))
    in_order = _sent_at(pushed_if021(), now - dt.timedelta(hours=1))
    out_of_order = _sent_at(pushed_if021(), now - dt.timedelta(minutes=150))
    raw_id = push(in_order, out_of_order)
    with CaptureQueriesContext(connection) as queries:
        processing.process_delivery(tenant_id=world.acme.id, raw_id=raw_id)
    reads = [q for q in queries.captured_queries if "FROM messaging_keyversion" in q["sql"]]
    assert len(reads) == 1
    assert _history_codes(world.acme.id, _txn(in_order)) == []
    assert _history_codes(world.acme.id, _txn(out_of_order)) == [("CTX-OUT-OF-ORDER", "warning")]
