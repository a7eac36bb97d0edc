"""Replay requests: checks first, four eyes in production, then the replay itself, all recorded.

Flow: :func:`plan_replay` works out the checks for a selection (nothing is written);
:func:`request_replay` records the request with those checks; a production request waits for a
second person with the approver role (:func:`approve_replay` / :func:`refuse_replay`), any other
runs at once; :func:`execute_replay` (a task, after commit) does the work and records the outcome
of every message. Audit actions: ``replay.requested``, ``replay.approved``, ``replay.refused``,
``replay.completed``.

What "replay" means per kind:

- inbound: the message's normalised events are owed again to every subscribed endpoint, with
  their original event ids (``webhook-id``), so a receiver that dedupes on it sees no second
  effect and one that lost them gets them back;
- outbound: the message goes to the DIP again. One the DIP never accepted goes with its stored
  bytes and sender reference (resubmitted); one the DIP accepted or refused needs a new sender
  unique reference (the DIP answers a reused one as a duplicate), so it is submitted again as a
  new message from the same submission, and the new message and its reference are recorded;
- dip_replay / dip_requeue: the DIP is asked to return (``/replay``) or push again
  (``/requeue``) a window of a channel.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from core.audit import record_event
from core.tenancy import get_current_tenant_id, tenant_context
from messaging.exceptions.handling import Operator
from messaging.models import DipExchange, Message
from messaging.replay.models import Replay, ReplayKind, ReplayReason, ReplayState
from messaging.store import services as store
from messaging.store.states import InboundState, OutboundState
from tenants.models import (
    Certificate,
    CertificatePurpose,
    CertificateStatus,
    Channel,
    Connection,
    Environment,
    Membership,
    Role,
)

logger = logging.getLogger(__name__)

REPLAY_LIMIT = 500
TEXT_LIMIT = 2000
INBOUND_REPLAYABLE = (InboundState.NORMALISED, InboundState.DELIVERED)
OUTBOUND_REPLAYABLE = (
    OutboundState.SENT,
    OutboundState.ACKNOWLEDGED,
    OutboundState.REJECTED,
    OutboundState.FAILED,
)


class ReplayRefused(ValueError):
    """The replay cannot be requested, approved or run; the message says why."""


@dataclass(frozen=True)
class Check:
    """One check of one message (or of the whole request when ``message_id`` is None)."""

    check: str  # idempotent, partial, superseded, certificate, state, approval
    status: str  # ok, warn (shown, does not stop), block (nothing moves)
    text: str
    message_id: int | None = None


@dataclass(frozen=True)
class ReplayPlan:
    kind: str
    connection: Connection
    production: bool
    message_ids: list[int]
    checks: list[Check]

    @property
    def blocked(self) -> list[Check]:
        return [c for c in self.checks if c.status == "block"]


# --- the checks ----------------------------------------------------------------------------------


def _superseded_by(message: Message) -> int | None:
    """A later message of the same direction for the same business key (or, inbound without
    one, the same interface and MPAN): replaying the older one could put old data over new."""
    later = Message.objects.filter(direction=message.direction, id__gt=message.id)
    if message.business_key:
        later = later.filter(business_key=message.business_key)
    elif message.mpan and message.interface_id:
        later = later.filter(interface_id=message.interface_id, mpan=message.mpan)
    else:
        return None
    return later.order_by("-id").values_list("id", flat=True).first()


def _inbound_checks(message: Message) -> list[Check]:
    from messaging.events.models import Delivery, DeliveryState, Event
    from tenants.models import DownstreamEndpoint

    checks: list[Check] = []
    mid = message.id
    if message.state not in INBOUND_REPLAYABLE:
        checks.append(
            Check("state", "block", f"it is {message.state}: it has no events to redeliver "
                  "(reprocess its exception instead)", mid)
        )  # fmt: skip
        return checks
    events = list(Event.objects.filter(source_message_id=mid).values_list("id", flat=True))
    endpoints = DownstreamEndpoint.objects.filter(enabled=True).count()
    if not events:
        checks.append(Check("state", "block", "no normalised events recorded for it", mid))
    elif not endpoints:
        checks.append(Check("state", "block", "no enabled downstream endpoint to deliver to", mid))
    checks.append(
        Check("idempotent", "ok", f"its {len(events)} event(s) go again with their original "
              "event ids (webhook-id): a receiver that dedupes on it sees no second effect", mid)
    )  # fmt: skip
    deliveries = Delivery.objects.filter(event_id__in=events)
    done = deliveries.filter(state=DeliveryState.DELIVERED).count()
    total = deliveries.count()
    if total and 0 < done < total:
        checks.append(
            Check("partial", "warn", f"an earlier delivery partly succeeded: {done} of {total} "
                  "deliveries arrived; those receivers get a duplicate they should ignore", mid)
        )  # fmt: skip
    elif total and done == total:
        checks.append(Check("partial", "ok", f"all {total} earlier deliveries arrived", mid))
    else:
        checks.append(Check("partial", "ok", "no earlier delivery arrived", mid))
    return checks


def _signing_check(message: Message) -> Check:
    """Which certificate signed the earlier send, and whether it still can; a resend is signed
    at send time with the connection's active signing certificate."""
    mid = message.id
    now = timezone.now()
    active = (
        Certificate.objects.filter(
            connection_id=message.connection_id,
            purpose=CertificatePurpose.SIGNING,
            status=CertificateStatus.ACTIVE,
        )
        .order_by("-activated_at")
        .first()
    )
    if active is None or (active.not_after and active.not_after <= now):
        return Check("certificate", "block", "the connection has no valid active signing "
                     "certificate to sign the resend with", mid)  # fmt: skip
    fingerprint = (
        DipExchange.objects.filter(sender_references__contains=[message.sender_unique_reference])
        .order_by("-started_at")
        .values_list("signing_certificate_fingerprint", flat=True)
        .first()
        if message.sender_unique_reference
        else None
    )
    if fingerprint and fingerprint == active.fingerprint_sha256:
        return Check(
            "certificate",
            "ok",
            f"signed before with {fingerprint[:16]}, still the "
            f"active signing certificate (valid until {active.not_after:%Y-%m-%d})",
            mid,
        )
    before = f"signed before with {fingerprint[:16]}" if fingerprint else "never signed before"
    return Check(
        "certificate", "warn",
        f"{before}; it will be re-signed with {active.fingerprint_sha256[:16]} "
        f"(valid until {active.not_after:%Y-%m-%d})" if active.not_after else
        f"{before}; it will be re-signed with {active.fingerprint_sha256[:16]}", mid,
    )  # fmt: skip


def _outbound_checks(message: Message) -> list[Check]:
    mid = message.id
    if message.state not in OUTBOUND_REPLAYABLE:
        return [Check("state", "block", f"it is {message.state}: not sent yet, nothing to replay",
                      mid)]  # fmt: skip
    checks: list[Check] = []
    if needs_new_reference(message):
        checks.append(
            Check("idempotent", "warn", "the DIP has seen its sender reference "
                  f"({message.sender_unique_reference}): it goes as a new message with a new "
                  "reference; the recipient receives it a second time", mid)
        )  # fmt: skip
        if message.channel_id is None:
            checks.append(Check("state", "block", "it has no channel to submit again on", mid))
    else:
        checks.append(
            Check("idempotent", "ok", "the DIP never accepted it: it goes with the same bytes and "
                  "reference (the DIP answers a duplicate reference as already accepted)", mid)
        )  # fmt: skip
    if message.transaction_id:
        checks.append(
            Check("partial", "warn", f"an earlier attempt succeeded: the DIP accepted it as "
                  f"{message.transaction_id} ({message.state})", mid)
        )  # fmt: skip
    else:
        checks.append(Check("partial", "ok", "no earlier attempt was accepted", mid))
    checks.append(_signing_check(message))
    return checks


def needs_new_reference(message: Message) -> bool:
    """The DIP holds (accepted) or refused this sender reference: resending it unchanged would
    be answered as a duplicate, so a replay needs a new one."""
    return bool(message.transaction_id) or message.state in (
        OutboundState.REJECTED,
        OutboundState.ACKNOWLEDGED,
        OutboundState.SENT,
    )


def plan_replay(*, kind: str, message_ids: Sequence[int]) -> ReplayPlan:
    """The checks for replaying these messages (inside the tenant's context); writes nothing.
    Raises ReplayRefused when the selection itself is wrong (empty, too big, unknown ids,
    another direction, several connections)."""
    if kind not in (ReplayKind.INBOUND, ReplayKind.OUTBOUND):
        raise ReplayRefused("a message replay is inbound or outbound")
    ids = list(dict.fromkeys(int(i) for i in message_ids))
    if not ids:
        raise ReplayRefused("select at least one message")
    if len(ids) > REPLAY_LIMIT:
        raise ReplayRefused(f"{len(ids)} messages selected; at most {REPLAY_LIMIT} per replay")
    messages = list(Message.objects.filter(id__in=ids).select_related("connection").order_by("id"))
    if len(messages) != len(ids):
        missing = sorted(set(ids) - {m.id for m in messages})
        raise ReplayRefused(f"no such message: {', '.join(map(str, missing[:10]))}")
    wrong = [m.id for m in messages if m.direction != kind]
    if wrong:
        raise ReplayRefused(f"not {kind} messages: {', '.join(map(str, wrong[:10]))}")
    connections = {m.connection_id for m in messages}
    if len(connections) > 1:
        raise ReplayRefused("the messages belong to several connections: one replay per connection")
    checks: list[Check] = []
    for message in messages:
        checks.extend(
            _inbound_checks(message) if kind == ReplayKind.INBOUND else _outbound_checks(message)
        )
        later = _superseded_by(message)
        if later is not None:
            checks.append(
                Check("superseded", "warn", f"a later message ({later}) for the same business key "
                      "has superseded it: replaying may put older data over newer", message.id)
            )  # fmt: skip
        else:
            checks.append(
                Check("superseded", "ok", "nothing later for its business key", message.id)
            )
    connection = messages[0].connection
    production = connection.environment == Environment.PRD
    checks.append(_approval_check(production))
    return ReplayPlan(kind, connection, production, [m.id for m in messages], checks)


def _approval_check(production: bool) -> Check:
    if production:
        return Check("approval", "warn", "production traffic: a second person with the "
                     "approver role must approve before anything moves")  # fmt: skip
    return Check("approval", "ok", "not production: runs once requested")


def plan_window(
    *,
    kind: str,
    connection: Connection,
    interface_id: str,
    window_from: dt.datetime,
    window_to: dt.datetime,
) -> ReplayPlan:
    """The checks for asking the DIP to replay or requeue a window of one channel."""
    if kind not in (ReplayKind.DIP_REPLAY, ReplayKind.DIP_REQUEUE):
        raise ReplayRefused("a window request is dip_replay or dip_requeue")
    if window_to <= window_from:
        raise ReplayRefused("the window must end after it starts")
    if window_to - window_from > dt.timedelta(days=7):
        raise ReplayRefused("a window is at most 7 days: ask again for the next one")
    if not Channel.objects.filter(
        connection=connection, interface_id=interface_id, direction="inbound"
    ).exists():
        raise ReplayRefused(f"the connection has no inbound channel {interface_id}")
    production = connection.environment == Environment.PRD
    checks = [
        Check("idempotent", "ok", "the DIP marks what it sends again (replayIndicator) and "
              "Busbar dedupes inbound messages on the DIP transaction id"),
        Check("partial", "ok" if kind == ReplayKind.DIP_REPLAY else "warn",
              "a replay only reads the DIP's record" if kind == ReplayKind.DIP_REPLAY else
              "a requeue pushes the window again to the registered webhook"),
        _approval_check(production),
    ]  # fmt: skip
    return ReplayPlan(kind, connection, production, [], checks)


# --- request, decide, run ------------------------------------------------------------------------


def _clean(text: str, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ReplayRefused(f"say why ({what})")
    if "\x00" in text:
        raise ReplayRefused(f"the {what} contains a NUL character")
    if len(text) > TEXT_LIMIT:
        raise ReplayRefused(f"the {what} is {len(text)} characters; at most {TEXT_LIMIT}")
    return text


def _audit(action: str, replay: Replay, by: Operator, **detail: Any) -> None:
    record_event(
        action=action,
        actor=by.name,
        actor_user_id=by.user_id,
        object_type="replay",
        object_id=replay.id,
        source_address=by.source_address,
        detail={
            "kind": replay.kind,
            "production": replay.production,
            "reason_code": replay.reason_code,
            "messages": list(replay.message_ids),
            **detail,
        },
    )


@transaction.atomic
def request_replay(
    *,
    plan: ReplayPlan,
    reason_code: str,
    reason_text: str,
    by: Operator,
    selection: dict[str, Any] | None = None,
    interface_id: str = "",
    window_from: dt.datetime | None = None,
    window_to: dt.datetime | None = None,
) -> Replay:
    """Record a replay request with its checks. Refused when a check blocks. Production waits
    for approval; anything else is approved by the rule and runs after commit."""
    if reason_code not in ReplayReason.values:
        raise ReplayRefused(f"choose a reason code ({', '.join(ReplayReason.values)})")
    reason_text = _clean(reason_text, "reason")
    if plan.blocked:
        raise ReplayRefused(
            "the checks stop it: " + "; ".join(
                f"{c.message_id}: {c.text}" if c.message_id else c.text for c in plan.blocked[:5]
            )
        )  # fmt: skip
    replay = Replay.objects.create(
        kind=plan.kind,
        connection=plan.connection,
        production=plan.production,
        reason_code=reason_code,
        reason_text=reason_text,
        selection=selection or {"ids": plan.message_ids},
        message_ids=plan.message_ids,
        interface_id=interface_id,
        window_from=window_from,
        window_to=window_to,
        checks=[asdict(c) for c in plan.checks],
        requested_by=by.name[:150],
        requested_by_user_id=by.user_id,
    )
    _audit(
        "replay.requested",
        replay,
        by,
        reason_text=reason_text,
        checks=replay.checks,
        interface_id=interface_id,
        window=[w.isoformat() for w in (window_from, window_to) if w],
    )
    if not plan.production:
        replay.state = ReplayState.APPROVED
        replay.decided_by = "rule: not production"
        replay.decided_at = timezone.now()
        replay.save(update_fields=["state", "decided_by", "decided_at"])
        _enqueue(replay)
    return replay


def _enqueue(replay: Replay) -> None:
    from messaging.replay.tasks import execute_replay_task  # tasks import this module

    execute_replay_task.delay_on_commit(str(replay.tenant_id), replay.id)


def _pending(replay_id: int) -> Replay:
    replay = Replay.objects.select_for_update().filter(id=replay_id).first()
    if replay is None:
        raise ReplayRefused("no such replay")
    if replay.state != ReplayState.PENDING:
        raise ReplayRefused(f"the replay is {replay.get_state_display().lower()}, not pending")
    return replay


def _check_approver(replay: Replay, by: Operator) -> None:
    if by.user_id is None:
        raise ReplayRefused("a replay is approved by a person")
    if by.user_id == replay.requested_by_user_id:
        raise ReplayRefused("the person who asked for a replay cannot approve it: four eyes")
    membership = Membership.objects.filter(user_id=by.user_id).first()
    if membership is None or Role.APPROVER not in membership.roles:
        raise ReplayRefused("approving a replay needs the approver role")


@transaction.atomic
def approve_replay(*, replay_id: int, by: Operator, note: str = "") -> Replay:
    """The second person's yes: the replay runs after commit."""
    replay = _pending(replay_id)
    _check_approver(replay, by)
    replay.state = ReplayState.APPROVED
    replay.decided_by = by.name[:150]
    replay.decided_by_user_id = by.user_id
    replay.decided_at = timezone.now()
    replay.decision_note = (note or "").strip()[:TEXT_LIMIT]
    replay.save(
        update_fields=["state", "decided_by", "decided_by_user_id", "decided_at", "decision_note"]
    )
    _audit("replay.approved", replay, by, note=replay.decision_note)
    _enqueue(replay)
    return replay


@transaction.atomic
def refuse_replay(*, replay_id: int, by: Operator, note: str) -> Replay:
    """The second person's no (or the requester withdrawing it); nothing moves."""
    replay = _pending(replay_id)
    if by.user_id != replay.requested_by_user_id:
        _check_approver(replay, by)
    replay.state = ReplayState.REFUSED
    replay.decided_by = by.name[:150]
    replay.decided_by_user_id = by.user_id
    replay.decided_at = timezone.now()
    replay.decision_note = _clean(note, "refusal note")
    replay.save(
        update_fields=["state", "decided_by", "decided_by_user_id", "decided_at", "decision_note"]
    )
    _audit("replay.refused", replay, by, note=replay.decision_note)
    return replay


def execute_replay(*, tenant_id: UUID | str, replay_id: int) -> Replay | None:
    """Run an approved replay once (a repeated task finds it moved on and does nothing). A
    production replay that was not approved is refused here too, whatever called it."""
    with tenant_context(tenant_id):
        with transaction.atomic():
            replay = Replay.objects.select_for_update().filter(id=replay_id).first()
            if replay is None:
                return None
            if replay.state == ReplayState.PENDING:
                raise ReplayRefused("the replay has not been approved")
            if replay.state != ReplayState.APPROVED:
                return replay  # done, refused or failed already
            if replay.production and not replay.decided_by_user_id:
                raise ReplayRefused("a production replay needs a person's approval")
            try:
                outcome = _run(replay)
                state = ReplayState.COMPLETED
            except Exception as exc:  # recorded as the outcome; the replay is closed as failed
                logger.exception("replay.failed", extra={"replay": replay.id})
                outcome, state = {"error": str(exc)[:500]}, ReplayState.FAILED
            replay.outcome = outcome
            replay.state = state
            replay.completed_at = timezone.now()
            replay.save(update_fields=["outcome", "state", "completed_at"])
            record_event(
                action="replay.completed",
                actor="system:replay",
                object_type="replay",
                object_id=replay.id,
                detail={"state": state, "kind": replay.kind, "outcome": outcome},
            )
        return replay


def _run(replay: Replay) -> dict[str, Any]:
    if replay.kind == ReplayKind.INBOUND:
        return _run_inbound(replay)
    if replay.kind == ReplayKind.OUTBOUND:
        return _run_outbound(replay)
    return _run_window(replay)


def _mark(replay: Replay, message_ids: Sequence[int], what: str) -> None:
    tenant_id = get_current_tenant_id()
    assert tenant_id is not None
    Message.objects.filter(id__in=list(message_ids)).update(replayed_at=timezone.now())
    store.note_on_timeline(
        tenant_id=tenant_id,
        message_ids=message_ids,
        actor=f"replay {replay.id}",
        reason=f"replayed ({replay.get_reason_code_display()}): {what}",
        detail={"replay": replay.id, "requested_by": replay.requested_by,
                "approved_by": replay.decided_by},
    )  # fmt: skip


def _run_inbound(replay: Replay) -> dict[str, Any]:
    from messaging.events.models import Delivery, DeliveryState, Event
    from messaging.events.services import WILDCARD
    from messaging.events.tasks import deliver_due_task
    from tenants.models import DownstreamEndpoint

    now = timezone.now()
    endpoints = list(DownstreamEndpoint.objects.filter(enabled=True).only("id", "event_types"))
    per_message: dict[str, Any] = {}
    for message_id in replay.message_ids:
        events = list(Event.objects.filter(source_message_id=message_id).order_by("id"))
        owed = [
            (event, endpoint)
            for event in events
            for endpoint in endpoints
            if event.type in endpoint.event_types or WILDCARD in endpoint.event_types
        ]
        Delivery.objects.bulk_create(
            [Delivery(event=e, endpoint=p, next_attempt_at=now) for e, p in owed],
            ignore_conflicts=True,
        )
        again = Delivery.objects.filter(event__in=events, endpoint__in=[p for _, p in owed]).update(
            state=DeliveryState.PENDING,
            attempts=0,
            next_attempt_at=now,
            lease_until=None,
            last_error="",
        )
        per_message[str(message_id)] = {
            "events": [e.webhook_id for e in events],
            "deliveries": again,
        }
        _mark(replay, [message_id], f"{len(events)} event(s) owed again to {again} delivery(s)")
    deliver_due_task.delay_on_commit(str(replay.tenant_id))
    return {"messages": per_message}


def _run_outbound(replay: Replay) -> dict[str, Any]:
    from messaging.outbound.services import (
        _submissions_for,
        prepare_outbound,
        resubmit_message,
        submit_messages,
    )
    from messaging.tasks import send_outbound_task

    per_message: dict[str, Any] = {}
    messages = list(Message.objects.filter(id__in=list(replay.message_ids)).order_by("id"))
    fresh = [m for m in messages if needs_new_reference(m)]
    submissions = _submissions_for(fresh)
    for message in messages:
        if message not in fresh:
            moved = resubmit_message(
                message_id=message.id, reason=f"replay {replay.id}", actor=f"replay {replay.id}"
            )
            per_message[str(message.id)] = {
                "resent": bool(moved),
                "sender_unique_reference": message.sender_unique_reference,
                "new_reference": False,
            }
            _mark(replay, [message.id], "resent with the same reference")
            continue
        assert message.channel_id is not None  # the checks block a replay without a channel
        channel = Channel.objects.get(id=message.channel_id)
        [new_id] = submit_messages(
            channel=channel,
            items=[submissions[message.id].as_json()],
            actor=f"replay {replay.id}",
        )
        ready = prepare_outbound(tenant_id=str(replay.tenant_id), message_ids=[new_id])
        new = Message.objects.get(id=new_id)
        if ready:
            send_outbound_task.delay_on_commit(str(replay.tenant_id), ready)
        per_message[str(message.id)] = {
            "resent": bool(ready),
            "new_message_id": new_id,
            "sender_unique_reference": new.sender_unique_reference,
            "previous_reference": message.sender_unique_reference,
            "new_reference": True,
        }
        _mark(
            replay,
            [message.id],
            f"sent again as message {new_id} with new reference {new.sender_unique_reference}",
        )
        store.note_on_timeline(
            tenant_id=str(replay.tenant_id),
            message_ids=[new_id],
            actor=f"replay {replay.id}",
            reason=f"replay of message {message.id}",
            detail={"replay": replay.id, "replay_of": message.id},
        )
        Message.objects.filter(id=new_id).update(replayed_at=timezone.now())
    return {"messages": per_message}


def _run_window(replay: Replay) -> dict[str, Any]:
    """Ask the DIP. This runs in a worker, never in a web request. The call leaves a
    ``DipExchange`` whatever the answer; an answer other than success fails the replay."""
    from messaging.credentials import dip_client_for
    from messaging.dip import DipTransportError
    from messaging.exchanges import record_call, record_failure
    from messaging.models import ExchangeOperation

    connection = Connection.objects.select_related("identity").get(id=replay.connection_id)
    recipient = connection.identity.dip_id
    requeue = replay.kind == ReplayKind.DIP_REQUEUE
    operation = ExchangeOperation.REQUEUE if requeue else ExchangeOperation.REPLAY
    started_at = timezone.now()
    with dip_client_for(connection=connection) as client:
        ask = client.requeue if requeue else client.replay
        try:
            answer = ask(
                replay.interface_id,
                recipient,
                datetime_from=replay.window_from,
                datetime_to=replay.window_to,
            )
        except DipTransportError as exc:
            record_failure(
                connection=connection,
                operation=operation,
                error=exc,
                started_at=started_at,
                interface_id=replay.interface_id,
            )
            raise ReplayRefused(f"the DIP gave no answer to the {operation}: {exc.reason}") from exc
    record_call(
        connection=connection,
        operation=operation,
        response=answer,
        started_at=started_at,
        interface_id=replay.interface_id,
    )
    if not answer.ok:
        reason = f": {answer.reason}" if answer.reason else ""
        raise ReplayRefused(f"the DIP answered the {operation} with HTTP {answer.status}{reason}")
    if requeue:
        outcome: dict[str, Any] = {"verb": "requeue", "http_status": answer.status}
        # How many the DIP will push again, when its answer says (dipsim's does).
        count = answer.data.get("requeued") if isinstance(answer.data, dict) else None
        if isinstance(count, int):
            outcome["requeued"] = count
        return outcome
    returned = answer.data if isinstance(answer.data, list) else []
    ids = [_transaction_id(item) for item in returned]
    held = set(
        Message.objects.filter(
            direction="inbound", transaction_id__in=[i for i in ids if i]
        ).values_list("transaction_id", flat=True)
    )
    return {
        "verb": "replay",
        "http_status": answer.status,
        "returned": len(returned),
        "not_held": sorted(i for i in ids if i and i not in held)[:100],
    }


def _transaction_id(element: Any) -> str:
    """``payload.CommonBlock.D0.transactionID`` of a DIP egress element, or ''."""
    value: Any = element
    for key in ("payload", "CommonBlock", "D0", "transactionID"):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else ""
