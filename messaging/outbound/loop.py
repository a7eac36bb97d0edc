"""Closing the loop on what Busbar sent: the DIP's asynchronous status messages (RCP codes, pushed
to Busbar's status webhook) and business responses (R0 blocks in reply interfaces) move the
outbound message they answer, and every outbound state change is published to the tenant's
systems as an ``outbound.state_changed`` event (the same signed webhooks and feed as inbound).

The status webhook belongs to the inbound side; it calls :func:`apply_status_messages`. The
inbound pipeline calls :func:`apply_business_responses` for messages whose CommonBlock has an R0.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db import transaction

from messaging.dip import Action, describe, parse_code
from messaging.exceptions.routing import raise_outbound_exceptions
from messaging.models import Message
from messaging.store import services as store
from messaging.store.states import OutboundState

logger = logging.getLogger(__name__)

EVENT_TYPE = "outbound.state_changed"


def publish_state_changes(
    *, tenant_id: UUID | str, message_ids: Sequence[int], state: str, reason: str
) -> int:
    """Publish one ``outbound.state_changed`` event per message (deduplicated per message and
    state, so a repeated call publishes nothing new). Returns the number published; 0 while the
    events module is not installed in this build."""
    try:
        events = importlib.import_module("messaging.events.services")
    except ImportError:
        return 0
    rows = Message.objects.filter(id__in=list(message_ids)).only(
        "id",
        "tenant_id",
        "interface_id",
        "sender_unique_reference",
        "transaction_id",
        "correlation_id",
        "mpan",
        "business_key",
    )
    return int(
        events.publish_events(
            tenant_id=tenant_id,
            type=EVENT_TYPE,
            events=[
                (
                    str(message.id),
                    f"outbound:{message.id}",
                    f"{message.id}:{state}",
                    {
                        "message_id": message.id,
                        "state": state,
                        "reason": reason,
                        "interface_id": message.interface_id,
                        "sender_unique_reference": message.sender_unique_reference,
                        "transaction_id": message.transaction_id,
                        "correlation_id": message.correlation_id,
                        "mpan": message.mpan,
                        "business_key": message.business_key,
                    },
                )
                for message in rows
            ],
        )
    )


def _move(
    tenant_id: UUID | str,
    ids: list[int],
    to_state: str,
    actor: str,
    reason: str,
    detail: dict[str, Any],
) -> list[int]:
    """sent -> ``to_state`` for those still sent, and publish the change."""
    moved = store.transition(
        tenant_id=tenant_id,
        message_ids=ids,
        from_state=OutboundState.SENT,
        to_state=to_state,
        actor=actor,
        reason=reason[:500],
        detail=detail,
        direction="outbound",
        reset_attempts=False,
    )
    if moved and to_state == OutboundState.REJECTED:
        raise_outbound_exceptions(
            tenant_id=tenant_id, message_ids=moved, to_state=to_state, reason=reason, detail=detail
        )
    if moved:
        publish_state_changes(tenant_id=tenant_id, message_ids=moved, state=to_state, reason=reason)
    return moved


@dataclass
class LoopReport:
    acknowledged: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # what named no sent message of ours
    noted: list[str] = field(default_factory=list)  # matched, no state change (e.g. RCP1000)


def _find(transaction_id: Any, reference: Any) -> Message | None:
    query = Message.objects.filter(direction="outbound")
    if isinstance(transaction_id, str) and transaction_id:
        found = query.filter(transaction_id=transaction_id).first()
        if found is not None:
            return found
    if isinstance(reference, str) and reference:
        return query.filter(sender_unique_reference=reference).first()
    return None


@transaction.atomic
def apply_status_messages(
    *, tenant_id: UUID | str, entries: Iterable[Mapping[str, Any]]
) -> LoopReport:
    """Apply the DIP's status messages (StandardResponse entries with an RCP code) about messages
    Busbar sent: RCP0000 acknowledges, a refusal rejects with the code's category, RCP1000 (a
    transient failure at the recipient) is noted only. Matched by transaction id, else sender
    reference; entries naming none of this tenant's sent messages are reported as unmatched."""
    report = LoopReport()
    for entry in entries:
        code = parse_code(entry.get("message"))
        message = _find(entry.get("transactionID"), entry.get("senderUniqueReference"))
        if message is None or code is None:
            report.unmatched.append(str(entry.get("transactionID") or entry.get("message")))
            continue
        detail = {
            "code": code,
            "message": entry.get("message"),
            "help": entry.get("help"),
            "from": entry.get("senderID"),
        }
        known = describe(code)
        if code == "RCP0000":
            report.acknowledged += _move(
                tenant_id, [message.id], OutboundState.ACKNOWLEDGED, "status", f"{code}", detail
            )
        elif known is not None and known.action is Action.RETRY:
            report.noted.append(f"{message.id}: {code}")
            logger.warning("outbound.status_retry", extra={"message_id": message.id, "code": code})
        else:
            detail["category"] = "technical" if code == "RCP9999" else "data_quality"
            report.rejected += _move(
                tenant_id,
                [message.id],
                OutboundState.REJECTED,
                "status",
                str(entry.get("message") or code),
                detail,
            )
    return report


@transaction.atomic
def apply_business_responses(
    *, tenant_id: UUID | str, payloads: Iterable[Mapping[str, Any]]
) -> LoopReport:
    """Apply business responses: inbound payloads whose CommonBlock has an R0 block. They are
    matched to the sent message by correlation id (the DIP's initial correlation id, which is the
    sender correlation id Busbar sent). ``A`` (accepted) and ``W`` (warning) acknowledge;
    ``R`` (rejected) and ``L`` (lapsed) reject with the response messages as the reason."""
    report = LoopReport()
    for payload in payloads:
        common = payload.get("CommonBlock") or {}
        r0 = common.get("R0") or {}
        d0 = common.get("D0") or {}
        s1 = common.get("S1") or {}
        correlation = d0.get("initialCorrelationID") or s1.get("senderCorrelationID")
        code = r0.get("responseCode")
        if not correlation or code not in {"A", "R", "L", "W"}:
            report.unmatched.append(str(correlation or d0.get("transactionID")))
            continue
        ids = list(
            Message.objects.filter(
                direction="outbound", correlation_id=correlation, state=OutboundState.SENT
            ).values_list("id", flat=True)
        )
        if not ids:
            report.unmatched.append(str(correlation))
            continue
        texts = [str(t) for t in r0.get("responseMessages") or []]
        detail = {
            "response_code": code,
            "response_messages": texts,
            "interface_id": (common.get("S0") or {}).get("interfaceID"),
            "transaction_id": d0.get("transactionID"),
        }
        reason = f"business response {code}" + (f": {'; '.join(texts)}" if texts else "")
        if code in {"A", "W"}:
            report.acknowledged += _move(
                tenant_id, ids, OutboundState.ACKNOWLEDGED, "business response", reason, detail
            )
        else:
            detail["category"] = "market_operations"
            report.rejected += _move(
                tenant_id, ids, OutboundState.REJECTED, "business response", reason, detail
            )
    return report
