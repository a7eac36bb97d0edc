"""Telling a tenant's people about a condition: one service for every kind of notice.

A notice is a console notification addressed to roles (shown on the Overview to members holding
one of them) and an email to each active member who holds one. ``condition`` names what raised it
(``channel_quiet:12``, ``certificate_expiry:<id>``, ``circuit_open:connection:3``): while a
condition stays open it notifies once per ``repeat_after``, however often a check runs, and
:func:`clear` closes it so that its next occurrence notifies at once.

Call inside the tenant's context. Workers send the email after their transaction commits
(``email="send"``); a web request passes ``email="enqueue"`` so a worker sends it, never the
request itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from django.conf import settings
from django.core.mail import send_mass_mail
from django.db import connection, transaction
from django.utils import timezone

from core.tenancy import current_tenant_id
from tenants.models import Membership, Notification, Role

logger = logging.getLogger(__name__)

DEFAULT_REPEAT = timedelta(hours=24)
LEVELS = ("info", "warning", "critical")
EmailMode = Literal["send", "enqueue", "none"]


def _lock(condition: str) -> None:
    """Serialise notices of one condition of one tenant (two checks at once notify once)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{current_tenant_id()}:{condition}"]
        )


def open_notice(*, condition: str) -> Notification | None:
    """The latest unresolved notification of ``condition``, or None."""
    return (
        Notification.objects.filter(condition=condition, resolved_at__isnull=True)
        .order_by("-created_at")
        .first()
    )


def recipients(*, roles: Sequence[str]) -> list[str]:
    """Email addresses of the active members holding any of ``roles``."""
    return sorted(
        {
            m.user.email
            for m in Membership.objects.select_related("user").filter(roles__overlap=list(roles))
            if m.user.email and m.user.is_active
        }
    )


@transaction.atomic
def notify(
    *,
    condition: str,
    roles: Sequence[str],
    level: str,
    title: str,
    body: str = "",
    object_type: str = "",
    object_id: object = "",
    repeat_after: timedelta | None = DEFAULT_REPEAT,
    email: EmailMode = "send",
    now: datetime | None = None,
) -> list[Notification]:
    """Raise a notice for ``condition`` unless one is open and younger than ``repeat_after``
    (None: never repeat while open). Returns the notifications made (one per role), empty when
    deduplicated. Raises ValueError for an unknown role or level, or an empty condition."""
    if not condition:
        raise ValueError("a notice names its condition, so that it can be deduplicated")
    unknown = [r for r in roles if r not in Role.values]
    if unknown or not roles:
        raise ValueError(f"notices go to tenant roles, not {unknown or 'nobody'}")
    if level not in LEVELS:
        raise ValueError(f"level is one of {', '.join(LEVELS)}, not {level!r}")
    now = now or timezone.now()
    _lock(condition)
    previous = open_notice(condition=condition)
    if previous is not None and (repeat_after is None or now - previous.created_at < repeat_after):
        return []
    made = [
        Notification.objects.create(
            role=role,
            level=level,
            title=title[:200],
            body=body,
            object_type=object_type,
            object_id=str(object_id or ""),
            condition=condition,
        )
        for role in dict.fromkeys(roles)
    ]
    if now != made[0].created_at:
        # A controlled clock (tests, backfills) decides when the notice counts as raised.
        Notification.objects.filter(id__in=[n.id for n in made]).update(created_at=now)
        for notification in made:
            notification.created_at = now
    logger.info("notice.raised", extra={"condition": condition, "level": level, "roles": roles})
    if email == "send":
        addresses = recipients(roles=roles)
        messages = [
            (f"[Busbar] {title}", body, settings.DEFAULT_FROM_EMAIL, [to]) for to in addresses
        ]
        if messages:
            # After commit: a rolled-back check must not have told anyone anything.
            transaction.on_commit(lambda: send_mass_mail(messages, fail_silently=False))
    elif email == "enqueue":
        from tenants.tasks import send_notice_email_task  # the tasks import this module

        send_notice_email_task.delay_on_commit(
            str(current_tenant_id()), [n.id for n in made], list(roles)
        )
    return made


@transaction.atomic
def clear(*, condition: str, now: datetime | None = None) -> int:
    """Close the open notices of ``condition`` (it has cleared); returns how many."""
    return Notification.objects.filter(condition=condition, resolved_at__isnull=True).update(
        resolved_at=now or timezone.now()
    )


def clear_all_except(*, prefix: str, keep: set[str], now: datetime | None = None) -> int:
    """Close every open notice whose condition starts with ``prefix`` and is not in ``keep``:
    what a check that saw every instance of a kind of condition did not see has cleared."""
    stale = (
        Notification.objects.filter(condition__startswith=prefix, resolved_at__isnull=True)
        .exclude(condition__in=keep)
        .values_list("condition", flat=True)
        .distinct()
    )
    return sum(clear(condition=condition, now=now) for condition in list(stale))


def send_notice_email(*, notification_ids: Sequence[int], roles: Sequence[str]) -> int:
    """Email the members holding ``roles`` about a notice already raised; returns emails sent."""
    notification = Notification.objects.filter(id__in=notification_ids).first()
    if notification is None:
        return 0
    messages = [
        (f"[Busbar] {notification.title}", notification.body, settings.DEFAULT_FROM_EMAIL, [to])
        for to in recipients(roles=roles)
    ]
    return send_mass_mail(messages, fail_silently=False) if messages else 0
