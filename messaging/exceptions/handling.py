"""People handling exceptions: assign, comment, resolve with a resolution code, reprocess, and
the same on a filtered set in bulk. Each step is written three times on purpose: the exception's
own history (``ExceptionHandling``, for the queue and evidence packs), a note on the message's
timeline, and an audit event (``exception.<action>``, sealed into the ledger with the rest)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.audit import record_event
from core.tenancy import get_current_tenant_id
from messaging.exceptions.models import (
    ExceptionHandling,
    ExceptionState,
    HandlingAction,
    MessageException,
    ResolutionCode,
)
from messaging.exceptions.selectors import UNRESOLVED
from messaging.store import services as store
from messaging.store.states import InboundState, OutboundState
from tenants.models import Membership, Role

# A bulk action touches at most this many exceptions; a wider filter must be narrowed first.
BULK_LIMIT = 500
TEXT_LIMIT = 2000


class HandlingRefused(ValueError):
    """The step cannot be taken; the message says why (shown to the person as is)."""


@dataclass(frozen=True)
class Operator:
    """Who is acting: a person (``user_id``) or a system (``user_id`` None)."""

    name: str
    user_id: int | None = None
    source_address: str | None = None


@dataclass
class ReprocessReport:
    resolved: list[int] = field(default_factory=list)  # exception ids now resolved
    still_failing: list[int] = field(default_factory=list)
    resubmitted: list[int] = field(default_factory=list)  # outbound: back in the outbox
    skipped: dict[int, str] = field(default_factory=dict)  # exception id -> why


def _record(
    exceptions: Sequence[MessageException],
    *,
    action: str,
    by: Operator,
    text: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    tenant_id = get_current_tenant_id()
    rows: list[ExceptionHandling] = []
    for exc in exceptions:
        event = record_event(
            action=f"exception.{action}",
            actor=by.name,
            actor_user_id=by.user_id,
            object_type="exception",
            object_id=exc.id,
            source_address=by.source_address,
            detail={
                "message_id": exc.message_id,
                "code": exc.code,
                "category": exc.category,
                "text": text,
                **(detail or {}),
            },
        )
        # The audit event is what the ledger seals; evidence packs tie the two by its id.
        rows.append(
            ExceptionHandling(
                exception=exc,
                action=action,
                actor=by.name[:150],
                actor_user_id=by.user_id,
                text=text,
                detail={**(detail or {}), "audit_event": str(event.id)},
            )
        )
    ExceptionHandling.objects.bulk_create(rows)
    message_ids = sorted({e.message_id for e in exceptions if e.message_id is not None})
    if message_ids and tenant_id is not None:
        reason = f"exception {action}" + (f": {text}" if text else "")
        store.note_on_timeline(
            tenant_id=tenant_id,
            message_ids=message_ids,
            actor=by.name,
            reason=reason,
            detail={"exception": action, **(detail or {})},
        )


def _clean_text(text: str, *, required: str = "") -> str:
    text = (text or "").strip()
    if "\x00" in text:
        raise HandlingRefused("the text contains a NUL character")
    if required and not text:
        raise HandlingRefused(required)
    if len(text) > TEXT_LIMIT:
        raise HandlingRefused(f"the text is {len(text)} characters; at most {TEXT_LIMIT}")
    return text


def _locked(exception_ids: Sequence[int]) -> list[MessageException]:
    ids = list(dict.fromkeys(int(i) for i in exception_ids))
    if not ids:
        raise HandlingRefused("select at least one exception")
    if len(ids) > BULK_LIMIT:
        raise HandlingRefused(
            f"{len(ids)} exceptions selected; at most {BULK_LIMIT} at once: narrow the filter"
        )
    rows = list(MessageException.objects.select_for_update().filter(id__in=ids).order_by("id"))
    if len(rows) != len(ids):
        raise HandlingRefused("no such exception")  # another tenant's looks the same
    return rows


@transaction.atomic
def assign_exceptions(
    *, exception_ids: Sequence[int], membership_id: int | None, by: Operator, text: str = ""
) -> int:
    """Assign to a member who handles messages (a message operator), or unassign (None)."""
    text = _clean_text(text)
    assignee: Membership | None = None
    if membership_id is not None:
        assignee = Membership.objects.select_related("user").filter(id=membership_id).first()
        if assignee is None:
            raise HandlingRefused("no such member")
        if Role.MESSAGE_OPERATOR not in assignee.roles:
            raise HandlingRefused(
                f"{assignee.user.get_username()} is not a message operator; "
                "exceptions go to someone who handles messages"
            )
    rows = _locked(exception_ids)
    now = timezone.now()
    MessageException.objects.filter(id__in=[r.id for r in rows]).update(
        assignee=assignee, assigned_at=now if assignee else None, updated_at=now
    )
    _record(
        rows,
        action=HandlingAction.ASSIGNED,
        by=by,
        text=text,
        detail={"assignee": assignee.user.get_username() if assignee else None},
    )
    return len(rows)


@transaction.atomic
def comment_on_exceptions(*, exception_ids: Sequence[int], text: str, by: Operator) -> int:
    text = _clean_text(text, required="write the comment")
    rows = _locked(exception_ids)
    MessageException.objects.filter(id__in=[r.id for r in rows]).update(updated_at=timezone.now())
    _record(rows, action=HandlingAction.COMMENTED, by=by, text=text)
    return len(rows)


@transaction.atomic
def resolve_by_person(*, exception_ids: Sequence[int], code: str, text: str, by: Operator) -> int:
    """Close exceptions with a resolution code from the fixed list and a text saying what was
    done. Already resolved ones are refused (nothing is half-done)."""
    if code not in ResolutionCode.values or code == ResolutionCode.AUTOMATIC:
        choices = ", ".join(c for c in ResolutionCode.values if c != ResolutionCode.AUTOMATIC)
        raise HandlingRefused(f"choose a resolution code ({choices})")
    text = _clean_text(text, required="say what was done")
    rows = _locked(exception_ids)
    closed = [r.id for r in rows if r.state not in UNRESOLVED]
    if closed:
        raise HandlingRefused(f"already resolved: {', '.join(map(str, closed[:10]))}")
    now = timezone.now()
    MessageException.objects.filter(id__in=[r.id for r in rows]).update(
        state=ExceptionState.RESOLVED,
        resolution_code=code,
        resolution=text[:300],
        resolved_at=now,
        updated_at=now,
    )
    _record(rows, action=HandlingAction.RESOLVED, by=by, text=text, detail={"code": code})
    return len(rows)


def reprocess_exceptions(*, exception_ids: Sequence[int], by: Operator) -> ReprocessReport:
    """Run the messages behind these exceptions again from their raw bytes.

    Inbound (invalid or failed): back to ``received`` and through validation and mapping with the
    current registry and mappings, now. An exception whose message then passes is resolved
    (``corrected_reprocessed``); one that fails the same way stays open (counted again); one
    that now fails otherwise is resolved as superseded by the new exception. Outbound (failed):
    back in the outbox with the same bytes and reference. Anything else is skipped with a reason.
    """
    from messaging.inbound.processing import process_messages
    from messaging.outbound.services import ResubmitRefused, resubmit_message

    report = ReprocessReport()
    with transaction.atomic():
        rows = _locked(exception_ids)
        tenant_id = get_current_tenant_id()
        assert tenant_id is not None
        from messaging.models import Message

        messages = {
            m.id: m
            for m in Message.objects.filter(
                id__in=[r.message_id for r in rows if r.message_id is not None]
            )
        }
        inbound: list[MessageException] = []
        for row in rows:
            message = messages.get(row.message_id) if row.message_id is not None else None
            if row.state not in UNRESOLVED:
                report.skipped[row.id] = "already resolved"
            elif message is None:
                report.skipped[row.id] = "no message to reprocess (a delivery-level failure)"
            elif message.direction == "inbound" and message.state in (
                InboundState.INVALID,
                InboundState.FAILED,
            ):
                inbound.append(row)
            elif message.direction == "outbound" and message.state == OutboundState.FAILED:
                try:
                    resubmit_message(
                        message_id=message.id,
                        reason=f"exception {row.id} reprocessed",
                        actor=by.name,
                    )
                except ResubmitRefused as exc:
                    report.skipped[row.id] = str(exc)
                    continue
                report.resubmitted.append(row.id)
                MessageException.objects.filter(id=row.id).update(
                    state=ExceptionState.RETRYING, updated_at=timezone.now()
                )
            else:
                report.skipped[row.id] = f"its message is {message.state}: nothing to run again"
        for row in inbound:
            assert row.message_id is not None
            store.transition(
                tenant_id=tenant_id,
                message_ids=[row.message_id],
                from_state=messages[row.message_id].state,
                to_state=InboundState.RECEIVED,
                actor=by.name,
                reason=f"reprocess (exception {row.id}) with the current rules and mappings",
                direction="inbound",
            )
        if inbound:
            process_messages(
                tenant_id=tenant_id, message_ids=[r.message_id for r in inbound if r.message_id]
            )
        after = dict(
            Message.objects.filter(id__in=[r.message_id for r in inbound]).values_list(
                "id", "state"
            )
        )
        now = timezone.now()
        for row in inbound:
            state = after.get(row.message_id or -1, "")
            if state in (InboundState.INVALID, InboundState.FAILED):
                again = MessageException.objects.filter(
                    message_id=row.message_id, state=ExceptionState.OPEN
                ).exclude(id=row.id)
                if again.exists():
                    MessageException.objects.filter(id=row.id).update(
                        state=ExceptionState.RESOLVED,
                        resolution_code=ResolutionCode.DUPLICATE,
                        resolution=f"reprocessed; now fails otherwise (exception {again[0].id})",
                        resolved_at=now,
                        updated_at=now,
                    )
                report.still_failing.append(row.id)
            else:
                MessageException.objects.filter(id=row.id).update(
                    state=ExceptionState.RESOLVED,
                    resolution_code=ResolutionCode.CORRECTED_AND_REPROCESSED,
                    resolution=f"reprocessed: now {state}",
                    resolved_at=now,
                    updated_at=now,
                )
                report.resolved.append(row.id)
        handled = [r for r in rows if r.id not in report.skipped]
        for outcome, ids in (
            ("resolved", report.resolved),
            ("still failing", report.still_failing),
            ("resubmitted", report.resubmitted),
        ):
            if ids:
                _record(
                    [r for r in handled if r.id in ids],
                    action=HandlingAction.REPROCESSED,
                    by=by,
                    detail={"outcome": outcome},
                )
    return report
