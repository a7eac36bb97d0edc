"""After commit: stored inbound messages through validation, exceptions and normalisation.

One task per delivery handles its messages in bulk. Every step is an idempotent state move in the
message store: the messages are claimed first (a lease and one more attempt, committed on their
own, so a worker killed mid-batch leaves the attempt counted), then validated together and moved
``received -> valid | invalid`` in one transaction with their findings and exceptions. A stale or
repeated task claims nothing and does nothing. A message claimed more than ``MAX_ATTEMPTS`` times
without finishing (it kills its worker, or always fails) is parked: ``failed`` plus a technical
exception, never dropped.

Messages refused in validation are reported back to their sender on the DIP's status channel
(RCP codes), from a separate task after commit (the DIP is another system: no transaction waits
on it).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.db import models, transaction
from django.utils.timezone import now

from core.gcpause import collector_paused
from core.tenancy import tenant_context
from messaging.events.services import derive_events, record_derived_events
from messaging.exceptions.models import Category
from messaging.exceptions.services import (
    ExceptionSpec,
    awaiting,
    raise_exceptions,
    resolve_exceptions,
)
from messaging.models import Message
from messaging.store.services import (
    FindingLike,
    claim_due,
    message_bytes,
    raw_body,
    record_findings,
    transition,
)
from messaging.store.states import InboundState
from messaging.validation import (
    Finding,
    Severity,
    Stage,
    ValidationContext,
    jsonparse,
    validate_batch,
)
from messaging.validation.selectors import StoredKeyHistory, get_registry, get_tenant_rules
from messaging.validation.services import record_key_versions
from tenants.models import Channel, Connection

logger = logging.getLogger(__name__)

ACTOR = "inbound"


def max_attempts() -> int:
    return int(getattr(settings, "BUSBAR_INBOUND_MAX_ATTEMPTS", 5))


def lease_seconds() -> float:
    # Longer than the task's hard time limit, so a live task never loses its lease to the sweeper.
    return float(settings.CELERY_TASK_TIME_LIMIT + 60)


@dataclass
class ProcessReport:
    """What one run did (ids per outcome); empty when another run had already done it."""

    valid: list[int] = field(default_factory=list)
    awaiting: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    parked: list[int] = field(default_factory=list)
    normalised: list[int] = field(default_factory=list)
    # Each validated message's parsed JSON element by id, handed on to normalisation so that a
    # round parses every message once (a message JSON could not parse has none).
    elements: dict[int, Any] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, int]:
        return {
            "valid": len(self.valid),
            "awaiting": len(self.awaiting),
            "invalid": len(self.invalid),
            "parked": len(self.parked),
            "normalised": len(self.normalised),
        }

    @property
    def total(self) -> int:
        return len(self.valid) + len(self.invalid) + len(self.parked)


# --- exceptions: who acts on which finding ---------------------------------------------------


def exception_for(finding: Finding) -> tuple[str, str]:
    """(category, whose it is to act) for a stopping finding.

    Structure and addressing problems are the sender's and the DIP's to fix (market operations);
    content problems are data quality: the sender's when the market rules say so (contextual),
    the client's when its own business rules flag them.
    """
    if finding.stage == Stage.SYNTACTIC or finding.code in {
        "CTX-ENVIRONMENT",
        "CTX-RECIPIENT",
        "CTX-SENDER",
        "CTX-ROLE",
    }:
        return Category.MARKET_OPERATIONS, "market_party"
    if finding.stage == Stage.BUSINESS:
        return Category.DATA_QUALITY, "client"
    return Category.DATA_QUALITY, "market_party"


# RCP codes for the status message that tells the sender why its message was refused.
_RCP_BY_CODE = {
    "SYN-JSON": "RCP1001",
    "SYN-NOT-OBJECT": "RCP1001",
    "SYN-SCHEMA": "RCP1001",
    "SYN-CHANNEL": "RCP1002",
    "SYN-UNKNOWN-INTERFACE": "RCP1002",
    "SYN-UNKNOWN-EVENT": "RCP1003",
    "SYN-UNKNOWN-SCHEMA-VERSION": "RCP1005",
    "CTX-ENVIRONMENT": "RCP1004",
    "CTX-TIMESTAMP": "RCP1007",
    "CTX-TIMESTAMP-FUTURE": "RCP1008",
    "CTX-SENDER": "RCP1009",
    "CTX-ROLE": "RCP1010",
    "CTX-RECIPIENT": "RCP1041",
    "CTX-MPAN-CHECK-DIGIT": "RCP1061",
}


def rcp_code(finding: Finding) -> str:
    """The RCP code that reports ``finding`` to the sender (value problems default to RCP1022)."""
    if finding.code in _RCP_BY_CODE:
        return _RCP_BY_CODE[finding.code]
    return "RCP1001" if finding.stage == Stage.SYNTACTIC else "RCP1022"


# --- the pipeline ----------------------------------------------------------------------------


def delivery_message_ids(*, tenant_id: UUID | str, raw_id: int) -> list[int]:
    """The inbound messages of one delivery still waiting in ``received``."""
    with tenant_context(tenant_id):
        return list(
            Message.objects.filter(raw_id=raw_id, direction="inbound", state=InboundState.RECEIVED)
            .order_by("id")
            .values_list("id", flat=True)
        )


def claim(*, tenant_id: UUID | str, message_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Lease the messages still due (committed at once: the attempt counts even if the worker
    dies next); return (ids to process, ids that used up their attempts)."""
    with tenant_context(tenant_id):
        claimed = claim_due(
            tenant_id=tenant_id,
            direction="inbound",
            state=InboundState.RECEIVED,
            limit=max(1, len(message_ids)),
            lease_seconds=lease_seconds(),
            message_ids=list(message_ids),
        )
    limit = max_attempts()
    return [c.id for c in claimed if c.attempts <= limit], [
        c.id for c in claimed if c.attempts > limit
    ]


@transaction.atomic
def park_messages(*, tenant_id: UUID | str, message_ids: Sequence[int], reason: str) -> list[int]:
    """Move messages that cannot be processed to ``failed`` with a technical exception each."""
    with tenant_context(tenant_id):
        moved = transition(
            tenant_id=tenant_id,
            message_ids=list(message_ids),
            from_state=InboundState.RECEIVED,
            to_state=InboundState.FAILED,
            actor=ACTOR,
            reason=reason,
            direction="inbound",
            error=reason,
            reset_attempts=False,
        )
        rows = Message.objects.filter(id__in=moved).values(
            "id", "raw_id", "connection_id", "interface_id", "transaction_id", "attempts"
        )
        raise_exceptions(
            specs=[
                ExceptionSpec(
                    code="INBOUND-POISON",
                    title=f"processing did not finish after {row['attempts']} attempts",
                    category=Category.TECHNICAL,
                    severity=Severity.ERROR,
                    message_id=row["id"],
                    raw_id=row["raw_id"],
                    connection_id=row["connection_id"],
                    interface_id=row["interface_id"],
                    transaction_id=row["transaction_id"] or "",
                    detail={"reason": reason},
                )
                for row in rows
            ]
        )
    if moved:
        logger.warning("inbound.parked", extra={"count": len(moved), "reason": reason})
    return moved


def _context(
    connection: Connection, channel: str | None, tenant_id: UUID | str
) -> ValidationContext:
    identity = connection.identity
    return ValidationContext(
        dip_ids=frozenset({identity.dip_id}),
        role=identity.role_code,
        environment=connection.environment,
        direction="in",
        channel=channel,
        history=StoredKeyHistory(tenant_id=tenant_id, connection_id=connection.id),
        rules=get_tenant_rules(tenant_id=tenant_id),
    )


@dataclass(slots=True)
class MessageRow:
    """The columns of a stored message that a round reads. A round reads hundreds of messages
    twice (to validate, then to normalise): a ``Message`` instance per row and read, with every
    one of its columns, cost about 40 us of CPU per message."""

    tenant_id: UUID
    id: int
    raw_id: int | None
    raw_offset: int | None
    raw_length: int | None
    connection_id: int
    channel_id: int | None
    interface_id: str
    transaction_id: str | None
    mpan: str


_ROW_COLUMNS = tuple(f.name for f in fields(MessageRow))


def _message_rows(message_ids: Sequence[int], state: str) -> list[MessageRow]:
    """The inbound messages among ``message_ids`` still in ``state``, in id order (inside the
    tenant's context)."""
    found = (
        Message.objects.filter(id__in=list(message_ids), state=state)
        .order_by("id")
        .values_list(*_ROW_COLUMNS)
    )
    return [MessageRow(*values) for values in found]


def validate_messages(*, tenant_id: UUID | str, message_ids: Sequence[int]) -> ProcessReport:
    """Validate claimed messages in bulk; move them to ``valid`` or ``invalid`` with their
    findings and exceptions, in one transaction. Messages that moved on meanwhile are skipped."""
    report = ProcessReport()
    with tenant_context(tenant_id):
        rows = _message_rows(message_ids, InboundState.RECEIVED)
        if not rows:
            return report
        # A round's messages share a connection or two: each is read once, not joined to every
        # row (building those objects per row cost more than validating some of the rows).
        connections = {
            c.id: c
            for c in Connection.objects.select_related("identity").filter(
                id__in={r.connection_id for r in rows}
            )
        }
        channels = dict(
            Channel.objects.filter(
                id__in={r.channel_id for r in rows if r.channel_id is not None}
            ).values_list("id", "interface_id")
        )
        registry = get_registry(tenant_id=tenant_id)
        bodies: dict[int, bytes] = {}
        groups: dict[tuple[int, str | None], list[MessageRow]] = defaultdict(list)
        for row in rows:
            if row.raw_id is not None and row.raw_id not in bodies:
                bodies[row.raw_id] = raw_body(tenant_id=tenant_id, raw_id=row.raw_id)
            channel_interface = channels[row.channel_id] if row.channel_id is not None else None
            groups[(row.connection_id, channel_interface)].append(row)
        findings: list[tuple[int, Finding]] = []
        specs: list[ExceptionSpec] = []
        refused: dict[int, Finding] = {}
        for (connection_id, channel), members in groups.items():
            context = _context(connections[connection_id], channel, tenant_id)
            items: list[Any] = []
            for m in members:
                raw = message_bytes(m, body=bodies[m.raw_id]) if m.raw_id is not None else b""
                try:
                    element = jsonparse.loads(raw)
                except (ValueError, RecursionError):
                    items.append(raw)  # the syntactic stage parses it again and says why not
                    continue
                report.elements[m.id] = element
                # Validation reads a str as JSON text: a JSON string element goes as its bytes.
                items.append(raw if isinstance(element, str) else element)
            outcomes = validate_batch(items, context=context, registry=registry)
            record_key_versions(
                tenant_id=tenant_id,
                connection_id=members[0].connection_id,
                outcomes=[(m.id, o) for m, o in zip(members, outcomes, strict=True)],
            )
            for message, outcome in zip(members, outcomes, strict=True):
                findings.extend((message.id, f) for f in outcome.findings)
                if outcome.ok:
                    report.valid.append(message.id)
                    continue
                report.invalid.append(message.id)
                stopping = [f for f in outcome.findings if f.severity in ("fatal", "error")]
                first = stopping[0]
                refused[message.id] = first
                category, to_act = exception_for(first)
                specs.append(
                    ExceptionSpec(
                        code=first.code,
                        title=first.text[:300],
                        category=category,
                        severity=Severity(first.severity),
                        message_id=message.id,
                        raw_id=message.raw_id,
                        connection_id=message.connection_id,
                        interface_id=message.interface_id,
                        transaction_id=message.transaction_id or "",
                        to_act=to_act,
                        detail={
                            "findings": [f.as_dict() for f in stopping[:20]],
                            "rcp": rcp_code(first),
                        },
                    )
                )
        record_findings(
            tenant_id=tenant_id,
            findings=cast("list[tuple[int, FindingLike]]", findings),
            registry_version=registry.name,
        )
        valid = set(report.valid)
        waiting = _unmet_dependencies([r for r in rows if r.id in valid])
        report.awaiting = transition(
            tenant_id=tenant_id,
            message_ids=list(waiting),
            from_state=InboundState.RECEIVED,
            to_state=InboundState.AWAITING,
            actor=ACTOR,
            reason="valid; waits for the message it follows",
            direction="inbound",
        )
        report.valid = transition(
            tenant_id=tenant_id,
            message_ids=[i for i in report.valid if i not in waiting],
            from_state=InboundState.RECEIVED,
            to_state=InboundState.VALID,
            actor=ACTOR,
            reason=f"validated ({registry.name})",
            direction="inbound",
        )
        by_id = {r.id: r for r in rows}
        awaiting_now = set(report.awaiting)
        raise_exceptions(
            specs=[
                ExceptionSpec(
                    code="AWAITING-" + key.split("|")[0],
                    title=f"waits for {key.split('|')[0]} for MPAN {key.split('|')[1]}",
                    category=Category.AWAITING_DEPENDENCY,
                    severity=Severity.INFO,
                    message_id=mid,
                    raw_id=by_id[mid].raw_id,
                    connection_id=by_id[mid].connection_id,
                    interface_id=by_id[mid].interface_id,
                    transaction_id=by_id[mid].transaction_id or "",
                    dependency_key=key,
                )
                for mid, key in waiting.items()
                if mid in awaiting_now
            ]
        )
        moved_valid = set(report.valid)
        report.valid += release_awaiting(
            tenant_id=tenant_id,
            keys={_dependency_key(r.interface_id, r.mpan) for r in rows if r.id in moved_valid},
        )
        report.invalid = transition(
            tenant_id=tenant_id,
            message_ids=report.invalid,
            from_state=InboundState.RECEIVED,
            to_state=InboundState.INVALID,
            actor=ACTOR,
            reason=f"refused in validation ({registry.name})",
            direction="inbound",
        )
        moved = set(report.invalid)
        raise_exceptions(specs=[s for s in specs if s.message_id in moved])
        if report.invalid:
            # The sender hears why, on the DIP's status channel, once this has committed.
            from messaging.inbound.tasks import send_refusal_status_task  # tasks import us

            send_refusal_status_task.delay_on_commit(str(tenant_id), report.invalid)
    return report


# An inbound message that only makes sense after another one for the same MPAN (an appointment
# confirmation after its acceptance) waits, valid, in ``awaiting`` until that one has arrived.
def dependencies() -> dict[str, tuple[str, ...]]:
    return dict(getattr(settings, "BUSBAR_INBOUND_DEPENDENCIES", {}))


def _dependency_key(interface_id: str, mpan: str) -> str:
    return f"{interface_id}|{mpan}"


def _unmet_dependencies(rows: Sequence[MessageRow | Message]) -> dict[int, str]:
    """Message id -> the dependency key it waits for, for valid messages whose predecessor (per
    :func:`dependencies`) for the same MPAN is held neither in the store nor in this batch."""
    rules = dependencies()
    wanted = {
        r.id: _dependency_key(need, r.mpan)
        for r in rows
        if r.mpan and r.interface_id in rules
        for need in rules[r.interface_id][:1]
    }
    if not wanted:
        return {}
    in_batch = {_dependency_key(r.interface_id, r.mpan) for r in rows}
    held = {
        _dependency_key(i, m)
        for i, m in Message.objects.filter(
            direction="inbound",
            mpan__in={k.split("|")[1] for k in wanted.values()},
            interface_id__in={k.split("|")[0] for k in wanted.values()},
            state__in=[InboundState.VALID, InboundState.NORMALISED, InboundState.DELIVERED],
        ).values_list("interface_id", "mpan")
    }
    return {mid: key for mid, key in wanted.items() if key not in held and key not in in_batch}


def release_awaiting(*, tenant_id: UUID | str, keys: set[str]) -> list[int]:
    """Messages that waited for any of ``keys`` (now arrived) move ``awaiting -> valid`` and
    their exceptions are resolved; returns their ids (normalised with the rest)."""
    found = awaiting(dependency_keys=keys)
    if not found:
        return []
    ids = [e.message_id for e in found if e.message_id is not None]
    moved = transition(
        tenant_id=tenant_id,
        message_ids=ids,
        from_state=InboundState.AWAITING,
        to_state=InboundState.VALID,
        actor=ACTOR,
        reason="the message it waited for has arrived",
        direction="inbound",
    )
    resolve_exceptions(message_ids=moved, resolution="the dependency arrived")
    return moved


def normalise(
    *,
    tenant_id: UUID | str,
    message_ids: Sequence[int],
    elements: Mapping[int, Any] | None = None,
) -> list[int]:
    """Record the normalised events of valid messages (``messaging.events``) and move them
    ``valid -> normalised`` in one transaction; a message no mapping can read moves to
    ``failed`` with a data-quality exception instead. Returns the ids normalised now (a repeat
    finds them moved on and does nothing).

    ``elements`` are messages' JSON elements as validation parsed them (by id); the others are
    read from their raw bytes."""
    elements = elements or {}
    with tenant_context(tenant_id):
        rows = _message_rows(message_ids, InboundState.VALID)
        if not rows:
            return []
        bodies: dict[int, bytes] = {}
        payloads: list[tuple[int, dict]] = []
        for row in rows:
            if row.id in elements:
                payloads.append((row.id, payload_of(elements[row.id])))
                continue
            if row.raw_id is not None and row.raw_id not in bodies:
                bodies[row.raw_id] = raw_body(tenant_id=tenant_id, raw_id=row.raw_id)
            body = bodies.get(row.raw_id) if row.raw_id is not None else None
            payloads.append((row.id, message_payload(message=row, body=body)))
        events, failures = derive_events(tenant_id=tenant_id, messages=payloads)
        # The events go in before the state moves, not after: this takes the tenant's feed lock
        # (held to the commit) and the moves then take the rollup counters' rows. The delivery
        # worker locks the tenant's endpoints and then the same counters, and inserting the
        # events' deliveries needs those endpoints: with the counters taken before the feed lock,
        # two inbound rounds and a delivery round deadlocked (measured in bench/e2e_bench.py).
        record_derived_events(tenant_id=tenant_id, events=events)
        done = transition(
            tenant_id=tenant_id,
            message_ids=[r.id for r in rows if r.id not in failures],
            from_state=InboundState.VALID,
            to_state=InboundState.NORMALISED,
            actor=ACTOR,
            reason="events recorded",
            direction="inbound",
        )
        if failures:
            failed = transition(
                tenant_id=tenant_id,
                message_ids=list(failures),
                from_state=InboundState.VALID,
                to_state=InboundState.FAILED,
                actor=ACTOR,
                reason="no mapping could read it",
                direction="inbound",
                error="; ".join(failures.values())[:2000],
            )
            by_id = {r.id: r for r in rows}
            raise_exceptions(
                specs=[
                    ExceptionSpec(
                        code="EVENT-MAPPING",
                        title=failures[mid][:300],
                        category=Category.DATA_QUALITY,
                        severity=Severity.ERROR,
                        message_id=mid,
                        raw_id=by_id[mid].raw_id,
                        connection_id=by_id[mid].connection_id,
                        interface_id=by_id[mid].interface_id,
                        transaction_id=by_id[mid].transaction_id or "",
                        to_act="provider",
                        owner_queue="provider-support",
                    )
                    for mid in failed
                ]
            )
        return done


def round_size() -> int:
    """How many received messages one round claims (``process_round``)."""
    return int(getattr(settings, "BUSBAR_INBOUND_ROUND_SIZE", 500))


def process_round(*, tenant_id: UUID | str, limit: int | None = None) -> tuple[ProcessReport, int]:
    """Claim up to ``limit`` of the tenant's oldest due received messages, whatever delivery
    they came in, and process them together; return the report and how many were claimed (a
    full round means more may be waiting)."""
    limit = limit or round_size()
    with tenant_context(tenant_id):
        claimed = claim_due(
            tenant_id=tenant_id,
            direction="inbound",
            state=InboundState.RECEIVED,
            limit=limit,
            lease_seconds=lease_seconds(),
        )
    most = max_attempts()
    ids = [c.id for c in claimed if c.attempts <= most]
    exhausted = [c.id for c in claimed if c.attempts > most]
    return _process_claimed(tenant_id=tenant_id, ids=ids, exhausted=exhausted), len(claimed)


def has_received_due(*, tenant_id: UUID | str) -> bool:
    """Whether any of the tenant's received messages is due (not leased, no retry pending)."""
    with tenant_context(tenant_id):
        return (
            Message.objects.filter(direction="inbound", state=InboundState.RECEIVED)
            .filter(models.Q(lease_until__isnull=True) | models.Q(lease_until__lt=now()))
            .filter(models.Q(next_attempt_at__isnull=True) | models.Q(next_attempt_at__lte=now()))
            .exists()
        )


def process_messages(*, tenant_id: UUID | str, message_ids: Sequence[int]) -> ProcessReport:
    """Claim, validate and normalise these inbound messages; park those out of attempts."""
    ids, exhausted = claim(tenant_id=tenant_id, message_ids=message_ids)
    return _process_claimed(tenant_id=tenant_id, ids=ids, exhausted=exhausted)


def _process_claimed(
    *, tenant_id: UUID | str, ids: list[int], exhausted: list[int]
) -> ProcessReport:
    # The round holds every message it parsed until it commits: see core.gcpause.
    with collector_paused():
        return _process_claimed_now(tenant_id=tenant_id, ids=ids, exhausted=exhausted)


def _process_claimed_now(
    *, tenant_id: UUID | str, ids: list[int], exhausted: list[int]
) -> ProcessReport:
    report = ProcessReport()
    if exhausted:
        report.parked = park_messages(
            tenant_id=tenant_id,
            message_ids=exhausted,
            reason=f"claimed more than {max_attempts()} times without finishing",
        )
    if ids:
        done = validate_messages(tenant_id=tenant_id, message_ids=ids)
        report.valid, report.invalid, report.awaiting = done.valid, done.invalid, done.awaiting
        if report.valid:
            report.normalised = normalise(
                tenant_id=tenant_id, message_ids=report.valid, elements=done.elements
            )
    logger.info(
        "inbound.processed",
        extra={
            "tenant_id": str(tenant_id),
            "valid": len(report.valid),
            "invalid": len(report.invalid),
            "parked": len(report.parked),
        },
    )
    return report


def process_delivery(*, tenant_id: UUID | str, raw_id: int) -> ProcessReport:
    """Process the received messages of one stored delivery (the webhook's follow-up)."""
    return process_messages(
        tenant_id=tenant_id, message_ids=delivery_message_ids(tenant_id=tenant_id, raw_id=raw_id)
    )


def message_payload(*, message: MessageRow | Message, body: bytes | None = None) -> dict:
    """The message's payload object, parsed from its exact stored bytes (``{"payload": ...}``)."""
    return payload_of(jsonparse.loads(message_bytes(message, body=body)))


def payload_of(element: Any) -> dict:
    """The payload object of a parsed message element (``{"payload": ...}``), else ``{}``."""
    payload = element.get("payload") if isinstance(element, dict) else None
    return payload if isinstance(payload, dict) else {}
