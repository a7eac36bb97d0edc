"""Outbound: a client's messages stored before anything is sent, then enriched, signed and sent to
the DIP in batches per channel, with each answer moving each message's state (DESIGN section 4).

The rows hold the truth and the tasks only say "look at these ids": every step claims or moves
messages with a conditional update, so a repeated or stale task does nothing, and the sweeper
re-enqueues whatever a lost task or a killed worker left behind.

States (``messaging.store.states``): accepted -> ready (enriched, final bytes stored) -> sending
(in a request) -> sent (201, transaction id kept) or rejected (an MSG code) or back to ready with
a retry time (408/429/5xx/no answer) or failed (credentials refused, or the retry budget spent).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from core.audit import record_event
from core.tenancy import tenant_context
from messaging import credentials
from messaging.dip import Action, DipTransportError, SubmitResult, describe
from messaging.dip.envelope import EnvelopeError, schema_version_for
from messaging.exceptions.models import Actor, Category
from messaging.exceptions.routing import raise_outbound_exceptions
from messaging.exceptions.services import ExceptionSpec, raise_exceptions
from messaging.models import ConnectionBreaker, Message
from messaging.outbound import breaker, clock, loop, ratelimit
from messaging.outbound.enrich import (
    Problem,
    Sender,
    Submission,
    final_payload,
    parse_submission,
    submission_from_json,
)
from messaging.outbound.inflight import RequestPool, partition_batches
from messaging.store import services as store
from messaging.store.services import OutboundMessageFacts
from messaging.store.states import OutboundState
from messaging.validation import ValidationContext, validate_batch
from messaging.validation.selectors import get_registry, get_tenant_rules
from tenants.certificates import CertificateError
from tenants.models import Channel, ChannelStatus, Connection, Direction

logger = logging.getLogger(__name__)

BATCH_MAX = 100
LEASE_SECONDS = 120.0
RETRY_BUDGET = dt.timedelta(hours=72)  # the programme's outage requirement: hold 72 hours
RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 900.0
WORKER = "outbound-worker"


class SubmissionInvalid(Exception):
    """A submission has problems; nothing was stored. ``problems`` lists every one."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the submission")
        self.problems = list(problems)


def check_submissions(*, channel: Channel, items: Sequence[Any], path: str) -> list[Submission]:
    """Every item checked; raise SubmissionInvalid listing every problem of every item."""
    problems: list[Problem] = []
    if channel.direction != Direction.OUTBOUND:
        problems.append(Problem("$", f"channel {channel.id} is an inbound channel"))
    if channel.status == ChannelStatus.DISABLED:
        problems.append(Problem("$", f"channel {channel.id} is disabled"))
    submissions: list[Submission] = []
    for index, item in enumerate(items):
        submission, found = parse_submission(item, path.format(index=index))
        problems.extend(found)
        if submission is not None:
            submissions.append(submission)
    if problems:
        raise SubmissionInvalid(problems)
    return submissions


@transaction.atomic
def submit_messages(
    *, channel: Channel, items: Sequence[Any], actor: str, path: str = "$.messages[{index}]"
) -> list[int]:
    """Check and store a client's messages for ``channel`` as ``accepted``; return their ids.

    Nothing is sent here (never inside a web request): a worker takes them after commit. Raises
    SubmissionInvalid (every problem, nothing stored).
    """
    if not items:
        raise SubmissionInvalid([Problem("$.messages", "at least one message")])
    submissions = check_submissions(channel=channel, items=items, path=path)
    interface_id = channel.interface_id
    source = json.dumps(
        [s.as_json() for s in submissions], separators=(",", ":"), ensure_ascii=False
    ).encode()
    _raw_id, ids = store.store_outbound_messages(
        tenant_id=str(channel.tenant_id),
        connection_id=channel.connection_id,
        channel_id=channel.id,
        source_body=source,
        headers={"actor": actor[:150]},
        messages=[
            OutboundMessageFacts(
                interface_id=interface_id,
                event_code=s.event_code,
                schema_version=schema_version_for(interface_id),
                correlation_id=s.correlation_id or "",
                mpan=s.mpan or "",
                business_key=s.key_for(interface_id),
                urgent=s.urgency == "urgent",
            )
            for s in submissions
        ],
    )
    for submission, message_id in zip(submissions, ids, strict=True):
        if submission.supersede:
            supersede_earlier(
                tenant_id=str(channel.tenant_id),
                message_id=message_id,
                business_key=submission.key_for(interface_id),
            )
    from messaging.tasks import prepare_outbound_task  # the tasks module imports this one

    prepare_outbound_task.delay_on_commit(str(channel.tenant_id), ids)
    return ids


def supersede_earlier(*, tenant_id: str, message_id: int, business_key: str) -> list[int]:
    """Mark the unsent (accepted or ready, not in a request) earlier messages with this business
    key superseded by ``message_id``, on their timelines; return their ids."""
    earlier = Message.objects.filter(
        direction="outbound", business_key=business_key, id__lt=message_id
    )
    moved: list[int] = []
    for state in (OutboundState.ACCEPTED, OutboundState.READY):
        ids = list(earlier.filter(state=state).values_list("id", flat=True))
        moved += store.transition(
            tenant_id=tenant_id,
            message_ids=ids,
            from_state=state,
            to_state=OutboundState.SUPERSEDED,
            actor="submission",
            reason=f"superseded by message {message_id}, a later version for {business_key}",
            detail={"superseded_by": message_id, "business_key": business_key},
            direction="outbound",
        )
    return moved


def _submissions_for(messages: Sequence[Message]) -> dict[int, Submission]:
    """Each message's canonical submission: the i-th entry of its source blob is the i-th message
    (by id) stored from that blob."""
    by_source: dict[int, list[Message]] = defaultdict(list)
    for message in messages:
        if message.source_raw_id is not None:
            by_source[message.source_raw_id].append(message)
    found: dict[int, Submission] = {}
    for raw_id, members in by_source.items():
        tenant_id = members[0].tenant_id
        items = json.loads(store.raw_body(tenant_id=str(tenant_id), raw_id=raw_id))
        siblings = list(
            Message.objects.filter(source_raw_id=raw_id).order_by("id").values_list("id", flat=True)
        )
        for message in members:
            found[message.id] = submission_from_json(items[siblings.index(message.id)])
    return found


def _sender(connection: Connection, interface_id: str) -> Sender:
    identity = connection.identity
    return Sender(
        interface_id=interface_id,
        environment=connection.environment,
        dip_id=identity.dip_id,
        role=identity.role_code,
        dcp_id=connection.dcp_id or None,
    )


def prepare_outbound(*, tenant_id: UUID | str, message_ids: Sequence[int]) -> list[int]:
    """Enrich accepted messages, store their exact final bytes and make them ready; return the
    ids made ready (an envelope that cannot be built makes its message ``invalid``)."""
    claimed = store.claim_due(
        tenant_id=tenant_id,
        direction="outbound",
        state=OutboundState.ACCEPTED,
        limit=len(message_ids),
        lease_seconds=LEASE_SECONDS,
        message_ids=message_ids,
    )
    if not claimed:
        return []
    messages = list(
        Message.objects.filter(id__in=[c.id for c in claimed]).select_related(
            "connection__identity"
        )
    )
    submissions = _submissions_for(messages)
    now = timezone.now()  # the stamp the DIP checks: real time
    ready: dict[tuple[int, int | None], list[tuple[int, bytes, str]]] = defaultdict(list)
    for message in messages:
        try:
            body, reference = final_payload(
                submission=submissions[message.id],
                sender=_sender(message.connection, message.interface_id),
                message_id=message.id,
                created_at=message.created_at,
                now=now,
            )
        except (EnvelopeError, KeyError) as exc:
            store.transition(
                tenant_id=tenant_id,
                message_ids=[message.id],
                from_state=OutboundState.ACCEPTED,
                to_state=OutboundState.INVALID,
                actor=WORKER,
                reason=f"the envelope cannot be built: {exc}"[:500],
                direction="outbound",
            )
            continue
        ready[(message.connection_id, message.channel_id)].append((message.id, body, reference))
    by_id = {m.id: m for m in messages}
    moved: list[int] = []
    for (connection_id, channel_id), payloads in ready.items():
        # The exact bytes are stored even when validation refuses them: they are the evidence.
        store.attach_payloads(
            tenant_id=tenant_id,
            connection_id=connection_id,
            channel_id=channel_id,
            payloads=payloads,
        )
        refused = validate_final_bytes(
            tenant_id=tenant_id,
            messages=[by_id[mid] for mid, _, _ in payloads],
            bodies=[body for _, body, _ in payloads],
        )
        moved += store.transition(
            tenant_id=tenant_id,
            message_ids=[mid for mid, _, _ in payloads if mid not in refused],
            from_state=OutboundState.ACCEPTED,
            to_state=OutboundState.READY,
            actor=WORKER,
            reason="enriched and validated; final bytes stored",
            direction="outbound",
        )
    return moved


def validate_final_bytes(
    *, tenant_id: UUID | str, messages: Sequence[Message], bodies: Sequence[bytes]
) -> set[int]:
    """Validate the exact bytes about to be signed against the tenant's schema registry (the one
    inbound uses), as the DIP would judge them. Refused messages move ``accepted -> rejected``
    with their findings recorded, a data-quality exception for the client listing every problem
    with its JSON path, and the change published; they are never sent. Returns the refused ids.
    Runs inside the tenant's context, on messages of one connection and interface."""
    if not messages:
        return set()
    registry = get_registry(tenant_id=tenant_id)
    connection = messages[0].connection
    context = ValidationContext(
        dip_ids=frozenset({connection.identity.dip_id}),
        role=connection.identity.role_code,
        environment=connection.environment,
        direction="out",
        channel=messages[0].interface_id,
        history=None,
        rules=get_tenant_rules(tenant_id=tenant_id),
    )
    outcomes = validate_batch(list(bodies), context=context, registry=registry)
    findings: list[tuple[int, Any]] = []
    problems: dict[int, list[dict[str, str]]] = {}
    for message, outcome in zip(messages, outcomes, strict=True):
        findings.extend((message.id, f) for f in outcome.findings)
        stopping = [f for f in outcome.findings if f.severity in ("fatal", "error")]
        if stopping:
            problems[message.id] = [
                {"path": f.path, "code": f.code, "message": f.text} for f in stopping
            ]
    store.record_findings(tenant_id=tenant_id, findings=findings, registry_version=registry.name)
    if not problems:
        return set()
    refused: set[int] = set()
    for message_id, listed in problems.items():
        summary = "; ".join(f"{p['path']}: {p['message']}" for p in listed)
        reason = f"refused by validation ({registry.name}) before sending: {summary}"[:500]
        detail = {"category": Category.DATA_QUALITY, "to_act": "client", "problems": listed}
        moved = store.transition(
            tenant_id=tenant_id,
            message_ids=[message_id],
            from_state=OutboundState.ACCEPTED,
            to_state=OutboundState.REJECTED,
            actor=WORKER,
            reason=reason,
            detail=detail,
            direction="outbound",
            error=reason,
        )
        if not moved:
            continue
        refused.add(message_id)
        message = next(m for m in messages if m.id == message_id)
        raise_exceptions(
            specs=[
                ExceptionSpec(
                    code="OUTBOUND-INVALID",
                    title=f"refused before sending: {len(listed)} problem(s); {summary}"[:300],
                    category=Category.DATA_QUALITY,
                    message_id=message_id,
                    raw_id=message.raw_id,
                    connection_id=message.connection_id,
                    interface_id=message.interface_id,
                    to_act=Actor.CLIENT,
                    detail={"problems": listed[:50], "registry": registry.name},
                )
            ]
        )
        loop.publish_state_changes(
            tenant_id=tenant_id,
            message_ids=[message_id],
            state=OutboundState.REJECTED,
            reason=reason,
        )
    logger.warning("outbound.refused_by_validation", extra={"count": len(refused)})
    return refused


@dataclass
class SendReport:
    sent: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    requests: int = 0
    # Connections whose breaker this send closed again (their backlog can drain now).
    recovered: set[int] = field(default_factory=set)
    # Held back by the rate limit: these may go in ``paced_wait`` seconds.
    paced: list[int] = field(default_factory=list)
    paced_wait: float = 0.0

    def merge(self, other: SendReport) -> None:
        """Add another report's counts (a request sent by another thread) to this one."""
        self.sent += other.sent
        self.rejected += other.rejected
        self.retried += other.retried
        self.failed += other.failed
        self.requests += other.requests
        self.recovered |= other.recovered
        self.paced += other.paced
        self.paced_wait = max(self.paced_wait, other.paced_wait)


def _bytes_of(messages: Sequence[Message]) -> dict[int, bytes]:
    blobs: dict[int, bytes] = {}
    out: dict[int, bytes] = {}
    for message in messages:
        assert message.raw_id is not None
        if message.raw_id not in blobs:
            blobs[message.raw_id] = store.raw_body(
                tenant_id=str(message.tenant_id), raw_id=message.raw_id
            )
        out[message.id] = store.message_bytes(message, body=blobs[message.raw_id])
    return out


def _move(
    tenant_id: UUID | str,
    ids: Sequence[int],
    to_state: str,
    reason: str,
    detail: dict[str, Any] | None = None,
    error: str = "",
    transaction_ids: dict[int, str] | None = None,
) -> list[int]:
    moved = store.transition(
        tenant_id=tenant_id,
        message_ids=list(ids),
        from_state=OutboundState.SENDING,
        to_state=to_state,
        actor=WORKER,
        reason=reason[:500],
        detail=detail,
        direction="outbound",
        error=error,
        reset_attempts=False,
        transaction_ids=transaction_ids,
    )
    if moved and to_state in (OutboundState.REJECTED, OutboundState.FAILED):
        raise_outbound_exceptions(
            tenant_id=tenant_id, message_ids=moved, to_state=to_state, reason=reason, detail=detail
        )
    if moved and to_state in PUBLISHED:
        loop.publish_state_changes(
            tenant_id=tenant_id, message_ids=moved, state=to_state, reason=reason[:500]
        )
    return moved


def _retry_or_park(
    tenant_id: UUID | str,
    messages: Sequence[Message],
    reason: str,
    retry_after: float | None,
    now: dt.datetime,
    detail: dict[str, Any],
) -> tuple[int, int]:
    """Back to ready with a retry time in the database, or parked as failed once the budget is
    spent. Returns (retried, failed)."""
    spent = [m.id for m in messages if now - m.created_at > RETRY_BUDGET]
    again = [m for m in messages if m.id not in spent]
    if spent:
        _move(tenant_id, spent, OutboundState.FAILED, f"retry budget spent: {reason}", detail)
    for message in again:
        if _move(tenant_id, [message.id], OutboundState.READY, f"retry: {reason}", detail):
            store.schedule_retry(
                tenant_id=tenant_id,
                message_ids=[message.id],
                delay_seconds=store.backoff_delay(
                    message.attempts, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS
                ),
                error=reason,
                retry_after=retry_after,
            )
    return len(again), len(spent)


def _apply(
    tenant_id: UUID | str,
    messages: Sequence[Message],
    result: SubmitResult,
    report: SendReport,
    isolate: Callable[[Sequence[Message]], None],
) -> None:
    """Move each message of a batch by the DIP's answer."""
    base = {"http_status": result.status, "exchange_body_sha256": result.body_sha256}
    if result.action is Action.RETRY:
        retried, failed = _retry_or_park(
            tenant_id, messages, result.reason, result.retry_after, clock.now(), base
        )
        report.retried += retried
        report.failed += failed
        return
    if result.action is Action.HALT:
        # Credentials refused, wrong URL, too large: resending blindly cannot help.
        _move(
            tenant_id,
            [m.id for m in messages],
            OutboundState.FAILED,
            f"{result.reason} (HTTP {result.status}): an incident, not retried",
            {**base, "category": "credentials" if result.status in (401, 403) else "technical"},
            error=result.reason,
        )
        logger.error("outbound.halted", extra={"status": result.status, "messages": len(messages)})
        report.failed += len(messages)
        return
    if result.resend_individually and len(messages) > 1:
        _move(tenant_id, [m.id for m in messages], OutboundState.READY, "batch refused: isolate")
        isolate(messages)
        return
    pairs: list[tuple[int, str]] = []
    for outcome in result.outcomes:
        message = messages[outcome.index]
        detail = {**base, "code": outcome.code, "message": outcome.message}
        if outcome.action is Action.ACCEPTED and outcome.transaction_id:
            pairs.append((message.id, outcome.transaction_id))
        elif outcome.action is Action.RECONCILE:
            # MSG1006: the DIP holds this reference already: an earlier attempt whose answer was
            # lost was accepted. Sending it again would change nothing; it counts as sent.
            _move(
                tenant_id,
                [message.id],
                OutboundState.SENT,
                "already accepted: the DIP reports this sender reference as a duplicate",
                {**detail, "duplicate": True},
            )
            report.sent += 1
        elif outcome.action is Action.RESEND:
            # Good, but its batch was refused for another message: resend it without that one.
            _move(tenant_id, [message.id], OutboundState.READY, "resend without the bad ones")
        elif outcome.action is Action.RETRY:
            retried, failed = _retry_or_park(
                tenant_id, [message], outcome.code or "retry", None, clock.now(), detail
            )
            report.retried += retried
            report.failed += failed
        else:
            code = describe(outcome.code or "")
            _move(
                tenant_id,
                [message.id],
                OutboundState.REJECTED,
                f"{outcome.message or outcome.code or 'refused'}",
                {
                    **detail,
                    "category": _category(outcome.code),
                    "advice": code.advice if code else "",
                },
                error=outcome.message or "",
            )
            report.rejected += 1
    if pairs:
        # One move for the batch: each message's transaction id is on its row (and on the
        # request's DipExchange); the timeline names the answer that carried it.
        _move(
            tenant_id,
            [message_id for message_id, _ in pairs],
            OutboundState.SENT,
            "accepted by the DIP",
            base,
            transaction_ids=dict(pairs),
        )
        report.sent += len(pairs)


def _category(code: str | None) -> str:
    """The exception queue a rejection goes to (DESIGN section 4, inbound step 5)."""
    if code in {"MSG1009", "MSG1010", "MSG1011"}:
        return "technical"  # the connection's identity is misconfigured
    if code in {"MSG1030", "MSG1031", "MSG1032", "MSG1033", "MSG1034", "MSG1035", "MSG1036"}:
        return "market_operations"  # routing and recipients
    if code in {"MSG1037", "MSG1038"}:
        return "awaiting_dependency"  # registration has not caught up with the MPAN
    return "data_quality"


def _claimed_for_sending(tenant_id: UUID | str, message_ids: Sequence[int]) -> list[int]:
    """Move claimed ready messages to ``sending`` (committed before the request leaves)."""
    return store.transition(
        tenant_id=tenant_id,
        message_ids=message_ids,
        from_state=OutboundState.READY,
        to_state=OutboundState.SENDING,
        actor=WORKER,
        reason="claimed for sending",
        direction="outbound",
        reset_attempts=False,
    )


def send_outbound(
    *,
    tenant_id: UUID | str,
    message_ids: Sequence[int],
    report: SendReport | None = None,
    paced: bool = True,
) -> SendReport:
    """Send ready messages, batched per channel, and move each by the DIP's answer.

    The claim (ready -> sending) commits before the request leaves, so a worker killed mid-send
    leaves the messages in ``sending`` for the sweeper, which makes them ready again: the resend
    carries the same bytes and sender reference, and a DIP that had accepted them answers MSG1006.
    Urgent messages go first (see :func:`send_order`); each connection's rate limit decides how
    many go now, unless the caller took the tokens already (``paced=False``, the drain).
    Must be called outside a tenant context (it opens its own, one per step).
    """
    report = report if report is not None else SendReport()
    with tenant_context(tenant_id):
        allowed = _gate(tenant_id, message_ids, paced=paced, report=report)
        claimed = store.claim_due(
            tenant_id=tenant_id,
            direction="outbound",
            state=OutboundState.READY,
            limit=max(len(allowed), 1),
            lease_seconds=LEASE_SECONDS,
            message_ids=allowed,
        )
        ids = _claimed_for_sending(tenant_id, [c.id for c in claimed])
        rank = {message_id: n for n, message_id in enumerate(allowed)}
        messages = sorted(
            Message.objects.filter(id__in=ids).select_related("connection__identity"),
            key=lambda m: rank.get(m.id, len(rank)),
        )
    groups: dict[tuple[int, str], list[Message]] = defaultdict(list)
    for message in messages:
        groups[(message.connection_id, message.interface_id)].append(message)
    for (_connection_id, interface_id), group in groups.items():
        for start in range(0, len(group), BATCH_MAX):
            _send_batch(tenant_id, interface_id, group[start : start + BATCH_MAX], report)
    return report


DRAIN_CHUNK = 800
# Requests of one connection in flight at once while its backlog drains (each waits for the
# DIP's answer most of its time).
DRAIN_IN_FLIGHT = 4
# Messages per second while a backlog drains; None: the connection's configured rate limit.
DRAIN_RATE: float | None = None


def send_order(rows: Iterable[tuple[int, str, bool]]) -> list[int]:
    """The order to send ``(id, business key, urgent)`` rows in: urgent before normal, oldest
    first within each. A message inherits the urgency of any later message with its business
    key, so an urgent message pulls its unsent predecessors forward and never overtakes them."""
    by_id = sorted(rows)
    pulled: set[int] = set()
    urgent_keys: set[str] = set()
    for message_id, key, urgent in reversed(by_id):
        if urgent or (key and key in urgent_keys):
            pulled.add(message_id)
            if key:
                urgent_keys.add(key)
    return [row[0] for row in sorted(by_id, key=lambda row: (row[0] not in pulled, row[0]))]


def _drain_chunk(connection_id: int) -> list[int]:
    """The next drain chunk, most urgent and oldest first, with the unsent earlier messages of
    its business keys (so ordering never stalls it), in send order."""
    base = Message.objects.filter(
        connection_id=connection_id, direction="outbound", state=OutboundState.READY
    )
    rows = list(
        base.order_by("-urgent", "id").values_list("id", "business_key", "urgent")[:DRAIN_CHUNK]
    )
    # Taken in id order, a normal message's unsent predecessors are in this chunk already; only
    # an urgent one, taken ahead of its turn, may have some outside it.
    newest: dict[str, int] = {}
    for message_id, key, urgent in rows:
        if key and urgent:
            newest[key] = max(newest.get(key, 0), message_id)
    if newest:
        have = {row[0] for row in rows}
        for message_id, key, urgent in base.filter(
            business_key__in=list(newest), id__lt=max(newest.values())
        ).values_list("id", "business_key", "urgent"):
            if message_id not in have and message_id < newest[key]:
                rows.append((message_id, key, urgent))
    return send_order(rows)


def _send_in_flight(
    tenant_id: UUID | str, message_ids: Sequence[int], pool: RequestPool, report: SendReport
) -> None:
    """Send a drain chunk (its rate-limit tokens already taken) as up to ``DRAIN_IN_FLIGHT``
    requests at once: :func:`send_outbound` with the chunk split so no business key is in two
    requests (see :func:`partition_batches`). What cannot go in this round stays ready, due, for
    the next chunk. Each request is claimed, sent, recorded and moved as when sent alone."""
    with tenant_context(tenant_id):
        allowed = _gate(tenant_id, message_ids, paced=False, report=report)
        facts = {
            message_id: (interface_id, key)
            for message_id, interface_id, key in Message.objects.filter(id__in=allowed).values_list(
                "id", "interface_id", "business_key"
            )
        }
        batches, _held = partition_batches(
            ((i, facts[i][0], facts[i][1]) for i in allowed if i in facts), BATCH_MAX
        )
        claimed = {
            c.id
            for c in store.claim_due(
                tenant_id=tenant_id,
                direction="outbound",
                state=OutboundState.READY,
                limit=max(sum(len(batch) for batch in batches), 1),
                lease_seconds=LEASE_SECONDS,
                message_ids=[i for batch in batches for i in batch],
            )
        }
        # A message another worker holds keeps the others of its key in the batch back (lease
        # given back, still ready): none may overtake it.
        going: list[list[int]] = []
        kept_back: list[int] = []
        for batch in batches:
            missing = {facts[i][1] for i in batch if i not in claimed and facts[i][1]}
            going.append([i for i in batch if i in claimed and facts[i][1] not in missing])
            kept_back += [i for i in batch if i in claimed and facts[i][1] in missing]
        store.release(tenant_id=tenant_id, message_ids=kept_back)
        moved = set(_claimed_for_sending(tenant_id, [i for batch in going for i in batch]))
        loaded = {
            m.id: m
            for m in Message.objects.filter(id__in=moved).select_related("connection__identity")
        }
    requests = [[loaded[i] for i in batch if i in loaded] for batch in going]

    def send(messages: list[Message]) -> SendReport:
        own = SendReport()
        _send_batch(tenant_id, messages[0].interface_id, messages, own)
        return own

    for own in pool.run([functools.partial(send, batch) for batch in requests if batch]):
        report.merge(own)


def _drain_progress(connection_id: int, **fields: Any) -> None:
    ConnectionBreaker.objects.filter(connection_id=connection_id).update(**fields)


def drain_connection(
    *,
    tenant_id: UUID | str,
    connection_id: int,
    rate: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[SendReport, int], None] | None = None,
) -> SendReport:
    """Send a connection's ready backlog now that the DIP answers: most urgent and oldest first
    (business-key order kept), in chunks paced by the connection's rate limit (``rate`` messages
    per second when given) so the recovering DIP is not flooded. Stops when the breaker opens
    again or nothing is left. The progress (backlog found, how many moved on) is kept on the
    breaker row for the console and the metrics; ``on_progress(report, remaining)`` is called
    after each chunk. ``sleep`` waits for the rate limit (a test passes one that moves the
    worker's clock). Must be called outside a tenant context."""
    rate = rate or DRAIN_RATE
    report = SendReport()
    with tenant_context(tenant_id):
        backlog = Message.objects.filter(
            connection_id=connection_id, direction="outbound", state=OutboundState.READY
        ).count()
        if backlog:
            breaker.get_breaker(connection_id=connection_id) or breaker.permit(
                connection_id=connection_id
            )
            _drain_progress(
                connection_id,
                drain_started_at=clock.now(),
                drain_finished_at=None,
                drain_backlog=backlog,
                drain_done=0,
            )
    with RequestPool(DRAIN_IN_FLIGHT) as pool:
        return _drain(tenant_id, connection_id, rate, sleep, on_progress, pool, report)


def _drain(
    tenant_id: UUID | str,
    connection_id: int,
    rate: float | None,
    sleep: Callable[[float], None],
    on_progress: Callable[[SendReport, int], None] | None,
    pool: RequestPool,
    report: SendReport,
) -> SendReport:
    while True:
        with tenant_context(tenant_id):
            current = breaker.get_breaker(connection_id=connection_id)
            if current is not None and current.state != "closed":
                return report
            ids = _drain_chunk(connection_id)
            if not ids:
                _drain_progress(connection_id, drain_finished_at=clock.now())
                return report
            grant = ratelimit.take(connection_id=connection_id, wanted=len(ids), rate=rate)
            ids = ids[: grant.granted]
            # Due now: the wait was the outage's, which is over.
            Message.objects.filter(id__in=ids, next_attempt_at__isnull=False).update(
                next_attempt_at=None
            )
        if ids:
            before = report.sent + report.rejected + report.failed
            _send_in_flight(tenant_id, ids, pool, report)
            done = report.sent + report.rejected + report.failed
            with tenant_context(tenant_id):
                _drain_progress(connection_id, drain_done=done)
                remaining = Message.objects.filter(
                    connection_id=connection_id, direction="outbound", state=OutboundState.READY
                ).count()
            if on_progress is not None:
                on_progress(report, remaining)
            if done == before:
                return report  # nothing moved (a new failure): leave it to the sweeper
        if grant.wait_seconds > 0:
            sleep(grant.wait_seconds)


ORDER_WAIT_SECONDS = 5.0
# The states a client system hears about (a retry back to ready is not news).
PUBLISHED = frozenset({OutboundState.SENT, OutboundState.REJECTED, OutboundState.FAILED})
UNSENT = (OutboundState.ACCEPTED, OutboundState.READY, OutboundState.SENDING)


def _gate(
    tenant_id: UUID | str,
    message_ids: Sequence[int],
    *,
    paced: bool = True,
    report: SendReport | None = None,
) -> list[int]:
    """The ready messages that may go now, in send order: their connection's breaker lets them
    (one probe when half-open, the most urgent), no earlier message with the same business key
    is still unsent, and (when ``paced``) the connection's rate limit has room. The others get a
    later ``next_attempt_at`` (no timeline row: nothing happened to them)."""
    rows = list(
        Message.objects.filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=Now()),
            id__in=message_ids,
            direction="outbound",
            state=OutboundState.READY,
        ).values_list("id", "connection_id", "business_key", "urgent")
    )
    order = send_order((message_id, key, urgent) for message_id, _c, key, urgent in rows)
    rank = {message_id: n for n, message_id in enumerate(order)}
    now = clock.now()
    by_connection: dict[int, list[int]] = defaultdict(list)
    for message_id, connection_id, _key, _urgent in rows:
        by_connection[connection_id].append(message_id)
    allowed: set[int] = set()
    for connection_id, ids in by_connection.items():
        ids.sort(key=rank.__getitem__)
        decision = breaker.permit(connection_id=connection_id, now=now)
        if not decision.send:
            wait = (decision.wait_until - now).total_seconds() if decision.wait_until else 60.0
            store.schedule_retry(
                tenant_id=tenant_id,
                message_ids=ids,
                delay_seconds=wait,
                error="circuit open: the DIP is failing; waiting for the probe",
            )
            continue
        if decision.probe:
            store.schedule_retry(
                tenant_id=tenant_id,
                message_ids=ids[1:],
                delay_seconds=ORDER_WAIT_SECONDS,
                error="circuit half-open: one probe goes first",
            )
            ids = ids[:1]
        allowed.update(ids)
    keys = {key for message_id, _c, key, _u in rows if key and message_id in allowed}
    if keys:
        earlier: dict[str, list[int]] = defaultdict(list)
        for message_id, key in (
            Message.objects.filter(direction="outbound", business_key__in=keys, state__in=UNSENT)
            .filter(id__lt=max(allowed))
            .values_list("id", "business_key")
            .order_by("id")
        ):
            earlier[key].append(message_id)
        blocked = []
        for message_id, _c, key, _u in sorted(rows):
            if (
                message_id in allowed
                and key
                and any(e < message_id and e not in allowed for e in earlier[key])
            ):
                blocked.append(message_id)
                allowed.discard(message_id)
        store.schedule_retry(
            tenant_id=tenant_id,
            message_ids=blocked,
            delay_seconds=ORDER_WAIT_SECONDS,
            error="waiting for an earlier message with the same business key",
        )
    if paced:
        for connection_id, ids in by_connection.items():
            going = [message_id for message_id in ids if message_id in allowed]
            grant = ratelimit.take(connection_id=connection_id, wanted=len(going))
            # A prefix of the send order: business-key order survives the cut.
            held = going[grant.granted :]
            if held:
                allowed.difference_update(held)
                if report is not None:
                    report.paced += held
                    report.paced_wait = max(report.paced_wait, grant.wait_seconds)
                store.schedule_retry(
                    tenant_id=tenant_id,
                    message_ids=held,
                    delay_seconds=max(grant.wait_seconds, 0.001),
                    error="rate limit: the connection's messages per second are spent",
                )
    return sorted(allowed, key=rank.__getitem__)


def _send_batch(
    tenant_id: UUID | str, interface_id: str, messages: Sequence[Message], report: SendReport
) -> None:
    """Send one request and move its messages by the answer, in one transaction after the answer
    (the evidence is committed on its own before). Messages to isolate (a batch refused for one
    bad message) go alone only after that transaction commits: another request may be in flight
    on this connection, and none holds the breaker row or the feed lock while it waits."""
    connection = messages[0].connection
    isolated: list[Message] = []
    with tenant_context(tenant_id):
        payloads = _bytes_of(messages)
        report.requests += 1
        try:
            result = credentials.submit_batch(
                connection=connection,
                interface_id=interface_id,
                messages=[payloads[m.id] for m in messages],
            )
        except DipTransportError as exc:
            detail = {"transport": exc.kind, "maybe_delivered": exc.maybe_delivered}
            if exc.retryable:
                breaker.record_failure(connection_id=connection.id, error=exc.reason)
                retried, failed = _retry_or_park(
                    tenant_id, messages, exc.reason[:300], None, clock.now(), detail
                )
                report.retried += retried
                report.failed += failed
            else:
                _move(tenant_id, [m.id for m in messages], OutboundState.FAILED, exc.reason, detail)
                report.failed += len(messages)
            return
        except CertificateError as exc:
            _move(
                tenant_id,
                [m.id for m in messages],
                OutboundState.FAILED,
                f"credentials: {exc}",
                {"category": "credentials"},
            )
            report.failed += len(messages)
            return

        if result.action is Action.RETRY:
            breaker.record_failure(
                connection_id=connection.id, error=result.reason, retry_after=result.retry_after
            )
        elif breaker.record_success(connection_id=connection.id):
            report.recovered.add(connection.id)
        _apply(tenant_id, messages, result, report, isolated.extend)
    for one in isolated:
        with tenant_context(tenant_id):
            alone = store.transition(
                tenant_id=tenant_id,
                message_ids=[one.id],
                from_state=OutboundState.READY,
                to_state=OutboundState.SENDING,
                actor=WORKER,
                reason="sent alone to find the bad message",
                direction="outbound",
                reset_attempts=False,
            )
        if alone:
            _send_batch(tenant_id, interface_id, [one], report)
    if not isolated and all(o.action is not Action.RESEND for o in result.outcomes):
        return  # every message has its outcome or a retry time: nothing to send again now
    with tenant_context(tenant_id):
        resend = list(
            Message.objects.filter(
                id__in=[m.id for m in messages],
                state=OutboundState.READY,
                next_attempt_at=None,
            ).values_list("id", flat=True)
        )
    if resend:
        send_outbound(tenant_id=tenant_id, message_ids=resend, report=report)


def recover_sending(*, tenant_id: UUID | str, message_ids: Sequence[int]) -> list[int]:
    """Messages left in ``sending`` by a lost worker: ready again, to be resent with the same
    bytes (MSG1006 answers for any the DIP had accepted)."""
    return store.transition(
        tenant_id=tenant_id,
        message_ids=list(message_ids),
        from_state=OutboundState.SENDING,
        to_state=OutboundState.READY,
        actor="sweeper",
        reason="no answer recorded (worker lost mid-send): resend with the same reference",
        direction="outbound",
        reset_attempts=False,
    )


class ResubmitRefused(ValueError):
    """The message cannot be resubmitted; the message says why."""


@transaction.atomic
def resubmit_message(*, message_id: int, reason: str, actor: str) -> list[int]:
    """Put a failed (parked) message back in the outbox with a person's reason on its timeline:
    the same stored bytes and sender reference go again. Raises ResubmitRefused."""
    from messaging.outbound.selectors import get_outbound_message
    from messaging.tasks import send_outbound_task  # the tasks module imports this one

    if not reason.strip():
        raise ResubmitRefused("say why the message is resubmitted")
    message = get_outbound_message(message_id=message_id)
    if message.state != OutboundState.FAILED:
        raise ResubmitRefused(
            f"only a failed message can be resubmitted; this one is {message.state}"
        )
    moved = store.transition(
        tenant_id=str(message.tenant_id),
        message_ids=[message.id],
        from_state=OutboundState.FAILED,
        to_state=OutboundState.READY,
        actor=actor,
        reason=f"resubmitted: {reason.strip()}"[:500],
        direction="outbound",
    )
    if moved:
        record_event(
            action="outbound.resubmitted",
            actor=actor,
            object_type="message",
            object_id=message.id,
            detail={"reason": reason.strip()[:500]},
        )
        send_outbound_task.delay_on_commit(str(message.tenant_id), moved)
    return moved
