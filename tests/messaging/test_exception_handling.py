"""The exception queue as people use it: every failure kind the inbound and outbound code produces
lands with the right owner, a client sees which open ones are theirs, and assign, comment,
resolve (with a code), reprocess and bulk actions each leave the exception's history, a timeline
note on the message and an audit event. SLA targets are stamped when an exception is raised."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from django.core import mail
from django.utils import timezone

from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.exceptions import handling
from messaging.exceptions.handling import HandlingRefused, Operator
from messaging.exceptions.models import ExceptionHandling, MessageException
from messaging.exceptions.routing import outbound_route
from messaging.exceptions.selectors import ExceptionFilter, filter_exceptions, whose_counts
from messaging.exceptions.sla import past_sla, sla_hours
from messaging.inbound import processing, receive
from messaging.models import Message, Transition
from messaging.reconciliation.models import Control
from messaging.reconciliation.services import run_reconciliation
from messaging.store import services as store
from messaging.validation.services import set_tenant_validation
from tenants import services as tenant_services
from tenants.models import Membership, Notification, Role
from tests.messaging.inbound_helpers import (
    BASE_URL,
    DipSigner,
    body_of,
    inbound_channel,
    pushed_if021,
    trust,
)


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
        with tenant_context(world.acme.id):
            return list(
                Message.objects.filter(raw_id=answer.delivery_id)
                .order_by("id")
                .values_list("id", flat=True)
            )

    yield send
    receive.forget_endpoints()


def _exception(tenant_id, message_id) -> MessageException:
    with tenant_context(tenant_id):
        return MessageException.objects.get(message_id=message_id, state="open")


def _store_valid_without_payload(tenant_id, interface_id="IF-021") -> int:
    """A message that passed validation but carries nothing a mapping can read (as a message
    validated under an older schema may): the store's real rows, moved to ``valid``."""
    item = json.dumps({"payload": {"CommonBlock": {}}}).encode()
    with tenant_context(tenant_id):
        connection = inbound_channel(tenant_id).connection
        stored = store.store_inbound_delivery(
            tenant_id=tenant_id,
            connection_id=connection.pk,
            channel_id=None,
            body=b"[" + item + b"]",
            headers={},
            messages=[
                store.InboundMessageFacts(
                    offset=1,
                    length=len(item),
                    sha256=hashlib.sha256(item).digest(),
                    transaction_id="T-MAPPING",
                    interface_id=interface_id,
                )
            ],
        )
        [mid] = stored.message_ids
        store.transition(
            tenant_id=tenant_id, message_ids=[mid], from_state="received", to_state="valid",
            actor="pytest", direction="inbound",
        )  # fmt: skip
    return mid


# --- owners: every inbound failure kind ----------------------------------------------------------


def test_each_inbound_failure_kind_lands_with_its_owner(push, world, settings):
    """Codes the inbound path raises, and whose each is:
    CTX-ENVIRONMENT / CTX-RECIPIENT (addressing) and SYN-* (structure): market operations, the
    sender's (market party); CTX-MPAN-CHECK-DIGIT (content by market rules): data quality, the
    sender's; BUS-* (the client's own rules): data quality, the client's; EVENT-MAPPING and
    INBOUND-POISON: Busbar's; AWAITING-*: waits for a market party's message."""
    tid = world.acme.id
    with tenant_context(tid):
        set_tenant_validation(
            tenant_id=tid,
            mpan_check="error",
            late_after_days=None,
            business_rules={
                "BUS-PERIOD-MAX-KWH": {"enabled": True, "severity": "error",
                                       "params": {"max_kwh": "0.001"}},
            },
        )  # fmt: skip
    broken = pushed_if021()
    broken["payload"]["CommonBlock"]["S0"]["interfaceID"] = 21  # not even a string
    bad_mpan = pushed_if021()
    bad_mpan["payload"]["CommonBlock"]["M0"]["MPANCore"] = "2000056535972"  # wrong check digit
    ids = push(
        pushed_if021(environment="PRD"),
        pushed_if021(recipient="1999999999"),
        broken,
        bad_mpan,
        pushed_if021(),  # breaks the client's own max-kWh rule
    )
    report = processing.process_messages(tenant_id=tid, message_ids=ids)
    assert report.invalid == ids
    owners = [
        (e.code.split("-")[0] + "-" if e.code.startswith("SYN") else e.code, e.category, e.to_act)
        for e in (_exception(tid, mid) for mid in ids)
    ]
    assert owners == [
        ("CTX-ENVIRONMENT", "market_operations", "market_party"),
        ("CTX-RECIPIENT", "market_operations", "market_party"),
        ("SYN-", "market_operations", "market_party"),
        ("CTX-MPAN-CHECK-DIGIT", "data_quality", "market_party"),
        ("BUS-PERIOD-MAX-KWH", "data_quality", "client"),
    ]
    # A message no mapping can read: Busbar's to fix.
    unmapped = _store_valid_without_payload(tid)
    processing.normalise(tenant_id=tid, message_ids=[unmapped])
    mapping = _exception(tid, unmapped)
    assert (mapping.code, mapping.category, mapping.to_act) == (
        "EVENT-MAPPING", "data_quality", "provider",
    )  # fmt: skip
    # One that waits for another party's message (a dependency configured for IF-021 here).
    settings.BUSBAR_INBOUND_DEPENDENCIES = {"IF-021": ("IF-035",)}
    with tenant_context(tid):
        set_tenant_validation(
            tenant_id=tid, mpan_check="off", late_after_days=None, business_rules={}
        )
    [waiting] = push(pushed_if021())
    processing.process_messages(tenant_id=tid, message_ids=[waiting])
    awaiting = _exception(tid, waiting)
    assert (awaiting.code, awaiting.category, awaiting.to_act) == (
        "AWAITING-IF-035", "awaiting_dependency", "market_party",
    )  # fmt: skip
    # Every exception has an SLA target from its category and severity.
    with tenant_context(tid):
        for e in MessageException.objects.all():
            hours = (e.sla_due_at - e.created_at).total_seconds() / 3600
            assert hours == pytest.approx(sla_hours(e.category, e.severity), abs=0.01)


# --- owners: every outbound failure kind ---------------------------------------------------------

OUTBOUND_KINDS = [
    # (to_state, reason, detail) -> (code, category, to_act)
    (("rejected", "MSG1009 sender", {"code": "MSG1009", "category": "technical"}),
     ("MSG1009", "technical", "provider")),
    (("rejected", "MSG1031", {"code": "MSG1031", "category": "market_operations"}),
     ("MSG1031", "market_operations", "market_party")),
    (("rejected", "MSG1037", {"code": "MSG1037", "category": "awaiting_dependency"}),
     ("MSG1037", "awaiting_dependency", "market_party")),
    (("rejected", "MSG1020 value", {"code": "MSG1020", "category": "data_quality"}),
     ("MSG1020", "data_quality", "client")),
    (("rejected", "RCP1061", {"code": "RCP1061", "category": "data_quality"}),
     ("RCP1061", "data_quality", "client")),
    (("rejected", "RCP9999", {"code": "RCP9999", "category": "technical"}),
     ("RCP9999", "technical", "provider")),
    (("rejected", "business response R", {"response_code": "R", "category": "market_operations"}),
     ("R0-R", "market_operations", "client")),
    (("failed", "forbidden (HTTP 403): an incident", {"category": "credentials"}),
     ("OUTBOUND-CREDENTIALS", "technical", "client")),
    (("failed", "retry budget spent: 503", {"http_status": 503}),
     ("OUTBOUND-RETRY-BUDGET", "technical", "provider")),
    (("failed", "connection refused", {"transport": "connect", "maybe_delivered": False}),
     ("OUTBOUND-TRANSPORT", "technical", "provider")),
    (("failed", "not found (HTTP 404): an incident", {"category": "technical"}),
     ("OUTBOUND-HALTED", "technical", "provider")),
]  # fmt: skip


@pytest.mark.parametrize(("move", "owner"), OUTBOUND_KINDS, ids=[o[0] for _, o in OUTBOUND_KINDS])
def test_each_outbound_failure_kind_is_routed_to_its_owner(move, owner):
    to_state, reason, detail = move
    route = outbound_route(to_state=to_state, reason=reason, detail=detail)
    assert (route.code, route.category, route.to_act) == owner


# --- the client's view ---------------------------------------------------------------------------


def test_a_client_sees_at_once_which_open_exceptions_are_theirs(push, world):
    tid = world.acme.id
    with tenant_context(tid):
        set_tenant_validation(
            tenant_id=tid, mpan_check="off", late_after_days=None,
            business_rules={"BUS-PERIOD-MAX-KWH": {"enabled": True, "severity": "error",
                                                   "params": {"max_kwh": "0.001"}}},
        )  # fmt: skip
    ids = push(pushed_if021(environment="PRD"), pushed_if021(), pushed_if021())
    processing.process_messages(tenant_id=tid, message_ids=ids)
    with tenant_context(tid):
        counts = whose_counts(membership_id=None)
        theirs = filter_exceptions(ExceptionFilter(whose="yours"))
        assert counts["yours"] == 2
        assert counts["market_party"] == 1
        assert sorted(e.message_id for e in theirs) == ids[1:]
        assert all(e.to_act == "client" for e in theirs)
    # Through the console: the page leads with the count of the client's own.
    from django.test import Client

    client = Client()
    client.force_login(world.bob.user)
    page = client.get("/exceptions/?whose=yours")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-whose="yours" data-count="2"' in text
    assert "BUS-PERIOD-MAX-KWH" in text
    assert "CTX-ENVIRONMENT" not in text


# --- handling -----------------------------------------------------------------------------------


def _failing_business_rule(push, world) -> tuple[list[int], list[int]]:
    tid = world.acme.id
    with tenant_context(tid):
        set_tenant_validation(
            tenant_id=tid, mpan_check="off", late_after_days=None,
            business_rules={"BUS-PERIOD-MAX-KWH": {"enabled": True, "severity": "error",
                                                   "params": {"max_kwh": "0.001"}}},
        )  # fmt: skip
    ids = push(pushed_if021(), pushed_if021())
    processing.process_messages(tenant_id=tid, message_ids=ids)
    with tenant_context(tid):
        exception_ids = list(
            MessageException.objects.filter(message_id__in=ids)
            .order_by("id")
            .values_list("id", flat=True)
        )
    return ids, exception_ids


def test_assign_comment_and_resolve_leave_history_timeline_and_audit(push, world):
    tid = world.acme.id
    ids, (first, second) = _failing_business_rule(push, world)
    bob = Operator("bob", world.bob.user.pk)
    with tenant_context(tid):
        bob_member = Membership.objects.get(user=world.bob.user)
        alice_member = Membership.objects.get(user=world.alice.user)
        with pytest.raises(HandlingRefused, match="not a message operator"):
            handling.assign_exceptions(exception_ids=[first], membership_id=alice_member.id, by=bob)
        handling.assign_exceptions(exception_ids=[first], membership_id=bob_member.id, by=bob)
        handling.comment_on_exceptions(
            exception_ids=[first], text="asked the meter team about the max", by=bob
        )
        with pytest.raises(HandlingRefused, match="resolution code"):
            handling.resolve_by_person(exception_ids=[first], code="made-up", text="x", by=bob)
        with pytest.raises(HandlingRefused, match="say what was done"):
            handling.resolve_by_person(
                exception_ids=[first], code="accepted_as_is", text=" ", by=bob
            )
        handling.resolve_by_person(
            exception_ids=[first], code="accepted_as_is", text="the limit was a test value", by=bob
        )
        exc = MessageException.objects.get(id=first)
        assert (exc.state, exc.resolution_code, exc.assignee_id) == (
            "resolved", "accepted_as_is", bob_member.id,
        )  # fmt: skip
        assert (
            filter_exceptions(
                ExceptionFilter(whose="mine", state="all", assignee_membership_id=bob_member.id)
            )
            .get()
            .id
            == first
        )
        history = list(
            ExceptionHandling.objects.filter(exception_id=first).values_list("action", "actor")
        )
        assert history == [("assigned", "bob"), ("commented", "bob"), ("resolved", "bob")]
        notes = list(
            Transition.objects.filter(message_id=ids[0], actor="bob").values_list(
                "from_state", "to_state", "reason"
            )
        )
        assert [n[2].split(":")[0] for n in notes] == [
            "exception assigned", "exception commented", "exception resolved",
        ]  # fmt: skip
        assert all(n[0] == n[1] == "invalid" for n in notes)  # a note moves nothing
        actions = sorted(
            AuditEvent.objects.filter(object_type="exception", object_id=str(first)).values_list(
                "action", flat=True
            )
        )
        assert actions == ["exception.assigned", "exception.commented", "exception.resolved"]
        with pytest.raises(HandlingRefused, match="already resolved"):
            handling.resolve_by_person(
                exception_ids=[first, second], code="duplicate", text="again", by=bob
            )
        assert MessageException.objects.get(id=second).state == "open"  # nothing half-done


def test_reprocess_runs_the_raw_message_again_with_the_current_rules(push, world):
    tid = world.acme.id
    ids, (first, second) = _failing_business_rule(push, world)
    bob = Operator("bob", world.bob.user.pk)
    with tenant_context(tid):
        # Still the same rules: it fails the same way, the exception stays open, counted again.
        report = handling.reprocess_exceptions(exception_ids=[first], by=bob)
        assert report.still_failing == [first]
        assert MessageException.objects.get(id=first).occurrences == 2
        # The rule is corrected: reprocessing passes and resolves it.
        set_tenant_validation(tenant_id=tid, mpan_check="off", late_after_days=None,
                              business_rules={})  # fmt: skip
        report = handling.reprocess_exceptions(exception_ids=[first, second], by=bob)
        assert sorted(report.resolved) == [first, second]
        assert set(Message.objects.filter(id__in=ids).values_list("state", flat=True)) == {
            "normalised"
        }
        resolved = MessageException.objects.get(id=first)
        assert resolved.resolution_code == "corrected_reprocessed"
        assert (
            AuditEvent.objects.filter(action="exception.reprocessed", object_id=str(first)).count()
            == 2
        )
        timeline = list(
            Transition.objects.filter(message_id=ids[0])
            .order_by("id")
            .values_list("from_state", "to_state", "actor")
        )
        moves = [(a, b) for a, b, _ in timeline if a != b]
        assert moves[-3:] == [
            ("invalid", "received"),
            ("received", "valid"),
            ("valid", "normalised"),
        ]
        assert timeline[-1] == ("normalised", "normalised", "bob")  # the reprocess note


def test_a_bulk_action_on_a_filter_touches_exactly_what_the_filter_selects(push, world):
    tid = world.acme.id
    with tenant_context(tid):
        set_tenant_validation(
            tenant_id=tid, mpan_check="off", late_after_days=None,
            business_rules={"BUS-PERIOD-MAX-KWH": {"enabled": True, "severity": "error",
                                                   "params": {"max_kwh": "0.001"}}},
        )  # fmt: skip
    ids = push(pushed_if021(environment="PRD"), pushed_if021(), pushed_if021(), pushed_if021())
    processing.process_messages(tenant_id=tid, message_ids=ids)
    bob = Operator("bob", world.bob.user.pk)
    with tenant_context(tid):
        selected = list(
            filter_exceptions(ExceptionFilter(whose="yours")).values_list("id", flat=True)
        )
        assert len(selected) == 3
        assert handling.comment_on_exceptions(exception_ids=selected, text="batch", by=bob) == 3
        assert ExceptionHandling.objects.filter(action="commented").count() == 3
        other = MessageException.objects.get(message_id=ids[0])
        assert not ExceptionHandling.objects.filter(exception=other).exists()
        with pytest.raises(HandlingRefused, match="at most"):
            handling.comment_on_exceptions(
                exception_ids=list(range(1, handling.BULK_LIMIT + 2)), text="x", by=bob
            )


def test_past_sla_finds_the_overdue_ones_for_notifications(push, world):
    tid = world.acme.id
    ids = push(pushed_if021(environment="PRD"))
    processing.process_messages(tenant_id=tid, message_ids=ids)
    exc = _exception(tid, ids[0])
    hours = sla_hours(exc.category, exc.severity)
    assert past_sla(tid, exc.created_at + dt.timedelta(hours=hours - 0.1)) == []
    [overdue] = past_sla(tid, exc.created_at + dt.timedelta(hours=hours + 0.1))
    assert overdue.id == exc.id
    assert past_sla(world.globex.id, timezone.now() + dt.timedelta(days=30)) == []


def test_exceptions_past_sla_notify_the_desk_once_and_clear_when_resolved(
    push, world, django_capture_on_commit_callbacks
):
    """The reconciliation run notifies operators and admins of overdue exceptions in one notice
    (console and email), does not repeat it on the next run, and clears it once none is overdue."""
    tid = world.acme.id
    ids = push(pushed_if021(environment="PRD"))
    processing.process_messages(tenant_id=tid, message_ids=ids)
    exc = _exception(tid, ids[0])
    late = exc.created_at + dt.timedelta(hours=sla_hours(exc.category, exc.severity) + 1)
    with tenant_context(tid):
        with django_capture_on_commit_callbacks(execute=True):
            run_reconciliation(now=late, controls=[Control.CADENCE])
        notice = Notification.objects.get(
            condition="exceptions_past_sla", role=Role.MESSAGE_OPERATOR
        )
        assert notice.title == "1 exception past its SLA"
        assert exc.code in notice.body
        assert notice.resolved_at is None
        sent = len(mail.outbox)
        assert any("past its SLA" in m.subject for m in mail.outbox)
        with django_capture_on_commit_callbacks(execute=True):
            run_reconciliation(now=late + dt.timedelta(minutes=15), controls=[Control.CADENCE])
        assert Notification.objects.filter(condition="exceptions_past_sla").count() == 2  # 2 roles
        assert len(mail.outbox) == sent  # not again
        handling.resolve_by_person(
            exception_ids=[exc.id],
            code="resent_by_sender",
            text="corrected by the sender",
            by=Operator("bob", world.bob.user.pk),
        )
        run_reconciliation(now=late + dt.timedelta(minutes=30), controls=[Control.CADENCE])
        notice.refresh_from_db()
        assert notice.resolved_at is not None
    with tenant_context(world.globex.id):
        assert not Notification.objects.filter(condition="exceptions_past_sla").exists()


def test_charlie_cannot_touch_acmes_exceptions(push, world):
    ids = push(pushed_if021(environment="PRD"))
    processing.process_messages(tenant_id=world.acme.id, message_ids=ids)
    exc = _exception(world.acme.id, ids[0])
    with tenant_context(world.globex.id), pytest.raises(HandlingRefused, match="no such"):
        handling.comment_on_exceptions(
            exception_ids=[exc.id], text="x", by=Operator("charlie", world.charlie.user.pk)
        )


def test_assigning_needs_a_member_of_this_tenant(push, world):
    ids = push(pushed_if021(environment="PRD"))
    processing.process_messages(tenant_id=world.acme.id, message_ids=ids)
    exc = _exception(world.acme.id, ids[0])
    with tenant_context(world.globex.id):
        dave = tenant_services.create_user(
            username="dave", email="d@globex.example", password="x" * 16,
            roles=[Role.MESSAGE_OPERATOR],
        )  # fmt: skip
        foreign = Membership.objects.get(user=dave).id
    with tenant_context(world.acme.id), pytest.raises(HandlingRefused, match="no such member"):
        handling.assign_exceptions(
            exception_ids=[exc.id], membership_id=foreign, by=Operator("bob", world.bob.user.pk)
        )
