"""Channel configuration as a controlled asset: propose, approve, apply, roll back.

A change to a channel (status, expected cadence, pinned schema version, a new webhook URL) is a
proposed change with a diff. On a production connection it waits for a second person, holding
the approver role and not the proposer, whose approval applies it; elsewhere it applies at once.
An applied change can be rolled back while the channel still holds what it set. Every step is an
audit event (``channel.change_proposed``, ``_approved``, ``_applied``, ``_rejected``,
``_rolled_back``), which the evidence ledger seals like every operator action, and the change
rows are the channel's history.

Every service runs in the tenant's context and is atomic; bad input or a refused step raises
``ValidationError`` naming the problem, and nothing is half-applied.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.audit import record_event
from tenants import notices
from tenants.models import (
    Channel,
    ChannelChange,
    ChannelChangeState,
    ChannelStatus,
    Environment,
    Membership,
    Role,
    new_webhook_token,
)

FIELDS = ("status", "expected_cadence", "pinned_schema_version", "webhook")
PROPOSER_ROLES = (Role.TENANT_ADMIN, Role.MESSAGE_OPERATOR)
ROLLBACK_ROLES = (Role.APPROVER, Role.TENANT_ADMIN)
SCHEMA_VERSION = re.compile(r"^\d{3}$")
MIN_CADENCE = timedelta(minutes=1)
MAX_CADENCE = timedelta(days=31)


def _roles(user: User) -> set[str]:
    membership = Membership.objects.filter(user=user).first()
    return set(membership.roles) if membership else set()


def _webhook_hint(token: str) -> str:
    return f"...{token[-4:]}"


def snapshot(channel: Channel) -> dict[str, Any]:
    """The channel's controlled settings as JSON values (cadence in seconds, webhook as a hint)."""
    return {
        "status": channel.status,
        "expected_cadence": (
            int(channel.expected_cadence.total_seconds()) if channel.expected_cadence else None
        ),
        "pinned_schema_version": channel.pinned_schema_version,
        "webhook": _webhook_hint(channel.webhook_token),
    }


def _clean(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate the requested values; cadence as seconds (or None), webhook as True (rotate)."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise ValidationError(f"a channel change may set {', '.join(FIELDS)}, not {unknown}")
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if "status" in changes:
        if changes["status"] not in ChannelStatus.values:
            errors["status"] = f"status is one of {', '.join(ChannelStatus.values)}"
        cleaned["status"] = changes["status"]
    if "expected_cadence" in changes:
        cadence = changes["expected_cadence"]
        if isinstance(cadence, timedelta):
            cadence = int(cadence.total_seconds())
        if cadence is not None and (
            not isinstance(cadence, int)
            or not MIN_CADENCE.total_seconds() <= cadence <= MAX_CADENCE.total_seconds()
        ):
            errors["expected_cadence"] = (
                f"the expected cadence is between {MIN_CADENCE} and {MAX_CADENCE}, or none"
            )
        cleaned["expected_cadence"] = cadence
    if "pinned_schema_version" in changes:
        version = (changes["pinned_schema_version"] or "").strip()
        if version and not SCHEMA_VERSION.match(version):
            errors["pinned_schema_version"] = "a DIP schema version is three digits, e.g. 011"
        cleaned["pinned_schema_version"] = version
    if changes.get("webhook"):
        cleaned["webhook"] = True
    if errors:
        raise ValidationError(errors)
    return cleaned


def _apply(channel: Channel, values: dict[str, Any], *, webhook_token: str | None) -> None:
    for name, value in values.items():
        if name == "expected_cadence":
            channel.expected_cadence = timedelta(seconds=value) if value is not None else None
        elif name == "webhook":
            continue
        else:
            setattr(channel, name, value)
    if webhook_token is not None:
        channel.webhook_token = webhook_token
    channel.save(
        update_fields=["status", "expected_cadence", "pinned_schema_version", "webhook_token"]
    )


def _audit(action: str, change: ChannelChange, actor: str, **extra: Any) -> None:
    record_event(
        action=action,
        actor=actor,
        object_type="channel",
        object_id=change.channel_id,
        detail={
            "change": change.pk,
            "interface_id": change.channel.interface_id,
            "direction": change.channel.direction,
            "environment": change.channel.connection.environment,
            "before": change.before,
            "after": change.after,
            "reason": change.reason,
            "requires_approval": change.requires_approval,
            **extra,
        },
    )


def _condition(change: ChannelChange) -> str:
    return f"channel_change:{change.pk}"


@transaction.atomic
def propose_channel_change(
    *, channel: Channel, changes: dict[str, Any], reason: str, user: User
) -> ChannelChange:
    """Propose ``changes`` to ``channel``; apply them at once unless the channel's connection is
    production, where they wait for an approver. Raises ValidationError for a proposer without
    the right role, bad values, a change that changes nothing, or an open proposal already."""
    if not _roles(user) & set(PROPOSER_ROLES):
        raise ValidationError("only a tenant admin or a message operator proposes channel changes")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "say why the channel changes"})
    channel = Channel.objects.select_for_update().select_related("connection").get(pk=channel.pk)
    current = snapshot(channel)
    wanted = _clean(changes)
    after = {k: v for k, v in wanted.items() if k == "webhook" or current[k] != v}
    if not after:
        raise ValidationError("the change changes nothing: the channel already has those values")
    before = {k: current[k] for k in after}
    token_after = new_webhook_token() if "webhook" in after else ""
    if token_after:
        after["webhook"] = _webhook_hint(token_after)
    change = ChannelChange(
        channel=channel,
        before=before,
        after=after,
        webhook_token_before=channel.webhook_token if token_after else "",
        webhook_token_after=token_after,
        reason=reason[:500],
        requires_approval=channel.connection.environment == Environment.PRD,
        proposed_by=user,
        proposed_by_name=user.get_username(),
    )
    try:
        with transaction.atomic():
            change.save()
    except IntegrityError as exc:
        raise ValidationError(
            "this channel already has a change awaiting approval: approve or reject it first"
        ) from exc
    actor = user.get_username()
    _audit("channel.change_proposed", change, actor)
    if change.requires_approval:
        notices.notify(
            condition=_condition(change),
            roles=[Role.APPROVER],
            level="info",
            title=f"A change to production channel {channel.interface_id} ({channel.direction}) awaits approval",
            body=f"Proposed by {actor}: {before} -> {after}\nReason: {change.reason}\n"
            "Approve or reject it on the Settings page (channel history).",
            object_type="channel_change",
            object_id=change.pk,
            repeat_after=None,
            email="enqueue",
        )
    else:
        _apply_change(change, channel, actor)
    return change


def _apply_change(change: ChannelChange, channel: Channel, actor: str) -> None:
    _apply(channel, _values(change.after), webhook_token=change.webhook_token_after or None)
    change.state = ChannelChangeState.APPLIED
    change.applied_at = timezone.now()
    change.save(update_fields=["state", "applied_at"])
    _audit("channel.change_applied", change, actor)


def _values(diff: dict[str, Any]) -> dict[str, Any]:
    """A diff's settable values (the webhook entry is a hint, applied from the token columns)."""
    return {k: v for k, v in diff.items() if k != "webhook"}


def _locked(change: ChannelChange) -> tuple[ChannelChange, Channel]:
    locked = (
        ChannelChange.objects.select_for_update()
        .select_related("channel__connection")
        .get(pk=change.pk)
    )
    channel = (
        Channel.objects.select_for_update().select_related("connection").get(pk=locked.channel_id)
    )
    return locked, channel


def _holds(channel: Channel, values: dict[str, Any]) -> bool:
    current = snapshot(channel)
    return all(current[k] == v for k, v in values.items())


@transaction.atomic
def approve_channel_change(*, change: ChannelChange, user: User, note: str = "") -> ChannelChange:
    """Approve a proposed change and apply it. Raises ValidationError unless ``user`` holds the
    approver role and is not the proposer, the change is still proposed, and the channel still
    holds what the change was proposed against."""
    change, channel = _locked(change)
    if change.state != ChannelChangeState.PROPOSED:
        raise ValidationError(
            f"this change is {change.get_state_display().lower()}, not awaiting approval"
        )
    if Role.APPROVER not in _roles(user):
        raise ValidationError("only an approver approves channel changes")
    if change.proposed_by_id == user.pk:
        raise ValidationError(
            "a second person approves: the proposer cannot approve their own change"
        )
    if not _holds(channel, _values(change.before)):
        raise ValidationError(
            "the channel changed since this was proposed: reject it and propose again"
        )
    actor = user.get_username()
    change.decided_by_name = actor
    change.decided_at = timezone.now()
    change.decision_note = (note or "").strip()[:500]
    change.save(update_fields=["decided_by_name", "decided_at", "decision_note"])
    _audit("channel.change_approved", change, actor, note=change.decision_note)
    _apply_change(change, channel, actor)
    notices.clear(condition=_condition(change))
    return change


@transaction.atomic
def reject_channel_change(*, change: ChannelChange, user: User, note: str = "") -> ChannelChange:
    """Reject (an approver) or withdraw (the proposer) a proposed change; nothing is applied."""
    change, _channel = _locked(change)
    if change.state != ChannelChangeState.PROPOSED:
        raise ValidationError(
            f"this change is {change.get_state_display().lower()}, not awaiting approval"
        )
    if Role.APPROVER not in _roles(user) and change.proposed_by_id != user.pk:
        raise ValidationError("only an approver or the proposer rejects a proposed change")
    actor = user.get_username()
    change.state = ChannelChangeState.REJECTED
    change.decided_by_name = actor
    change.decided_at = timezone.now()
    change.decision_note = (note or "").strip()[:500]
    change.save(update_fields=["state", "decided_by_name", "decided_at", "decision_note"])
    _audit("channel.change_rejected", change, actor, note=change.decision_note)
    notices.clear(condition=_condition(change))
    return change


@transaction.atomic
def rollback_channel_change(*, change: ChannelChange, user: User, reason: str) -> ChannelChange:
    """Put back what an applied change replaced. Raises ValidationError unless ``user`` is an
    approver or tenant admin, the change is applied, and the channel still holds what it set
    (a later change must be rolled back first)."""
    change, channel = _locked(change)
    if change.state != ChannelChangeState.APPLIED:
        raise ValidationError(f"only an applied change is rolled back; this one is {change.state}")
    if not _roles(user) & set(ROLLBACK_ROLES):
        raise ValidationError("only an approver or a tenant admin rolls back a channel change")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "say why the change is rolled back"})
    holds = _holds(channel, _values(change.after)) and (
        not change.webhook_token_after or channel.webhook_token == change.webhook_token_after
    )
    if not holds:
        raise ValidationError("the channel changed again since: roll back the later change first")
    _apply(
        channel,
        _values(change.before),
        webhook_token=change.webhook_token_before or None,
    )
    actor = user.get_username()
    change.state = ChannelChangeState.ROLLED_BACK
    change.rolled_back_by_name = actor
    change.rolled_back_at = timezone.now()
    change.save(update_fields=["state", "rolled_back_by_name", "rolled_back_at"])
    _audit("channel.change_rolled_back", change, actor, rollback_reason=reason[:500])
    return change


def get_channel_change(*, change_id: int) -> ChannelChange:
    """The current tenant's change, or ``ChannelChange.DoesNotExist`` (another tenant's too)."""
    return ChannelChange.objects.select_related("channel__connection").get(pk=change_id)


def list_channel_changes(*, channel: Channel | None = None, limit: int = 50) -> list[ChannelChange]:
    rows = ChannelChange.objects.select_related("channel__connection").order_by(
        "-proposed_at", "-id"
    )
    if channel is not None:
        rows = rows.filter(channel=channel)
    return list(rows[:limit])
