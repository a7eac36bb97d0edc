"""Replays in the console: the list (pending approvals first), a new request in two steps (the
checks are shown before anything is recorded or moves), one replay with everything it recorded,
and the approver's decision. Message operators ask; approvers decide (never their own)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.roles import METADATA_ROLES
from console.views.exceptions import operator_of
from console.views.home import tenant_required
from messaging.inbound.selectors import MessageFilter, list_messages
from messaging.models import Message
from messaging.replay import selectors
from messaging.replay import services as replays
from messaging.replay.models import ReplayKind, ReplayReason, ReplayState
from messaging.replay.services import ReplayPlan, ReplayRefused
from tenants import selectors as tenant_selectors
from tenants.models import Channel, Connection, Membership, Role


def _membership(request: HttpRequest) -> Membership:
    return request.membership  # type: ignore[attr-defined]


def _has(request: HttpRequest, *roles: str) -> bool:
    return tenant_selectors.user_has_role(_membership(request), *roles)


def _refuse(request: HttpRequest, need: str) -> HttpResponse:
    return render(request, "console/403.html", {"need": need}, status=403)


@tenant_required
def replay_list(request: HttpRequest) -> HttpResponse:
    if not _has(request, *METADATA_ROLES):
        return _refuse(request, "a role that handles messages")
    rows = selectors.list_replays(limit=200)
    return render(
        request,
        "console/replays/list.html",
        {
            "pending": [r for r in rows if r.state == ReplayState.PENDING],
            "replays": [r for r in rows if r.state != ReplayState.PENDING],
            "is_operator": _has(request, Role.MESSAGE_OPERATOR),
        },
    )


def _ids(text: str) -> list[int]:
    parts = [p for p in text.replace(",", " ").split() if p]
    bad = [p for p in parts if not p.isdigit()]
    if bad:
        raise ReplayRefused(f"not a message id: {', '.join(bad[:5])}")
    return [int(p) for p in parts]


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        raise ReplayRefused(f"not a date: {value!r} (YYYY-MM-DD)") from None


def _selected(data: Any, kind: str) -> tuple[list[int], dict[str, Any]]:
    """Message ids from the posted ids, else from the posted filter (capped at the replay
    limit plus one, so a too-wide filter is refused rather than cut short)."""
    ids_text = data.get("ids", "").strip()
    if ids_text:
        ids = _ids(ids_text)
        return ids, {"ids": ids}
    filters = MessageFilter(
        text=data.get("q", "")[:200],
        interface_id=data.get("interface", "")[:8],
        state=data.get("state", "")[:20],
        direction=kind,
        date_from=_date(data.get("from", "")),
        date_to=_date(data.get("to", "")),
    )
    if not (filters.text or filters.interface_id or filters.state or filters.date_from):
        raise ReplayRefused("give message ids or a filter (interface, state, dates or a search)")
    found = list_messages(filters=filters, limit=replays.REPLAY_LIMIT + 1)
    return sorted(m.id for m in found), {
        "filter": {
            "q": filters.text,
            "interface": filters.interface_id,
            "state": filters.state,
            "from": str(filters.date_from or ""),
            "to": str(filters.date_to or ""),
        }
    }


def _window(data: Any) -> tuple[Connection, str, dt.datetime, dt.datetime]:
    raw = data.get("connection", "")
    connection = (
        Connection.objects.select_related("identity").filter(id=int(raw)).first()
        if raw.isdigit()
        else None
    )
    if connection is None:
        raise ReplayRefused("choose a connection")
    try:
        start = dt.datetime.fromisoformat(data.get("window_from", ""))
        end = dt.datetime.fromisoformat(data.get("window_to", ""))
    except ValueError:
        raise ReplayRefused("the window needs a start and an end (YYYY-MM-DDTHH:MM)") from None
    if timezone.is_naive(start):
        start = start.replace(tzinfo=dt.UTC)
    if timezone.is_naive(end):
        end = end.replace(tzinfo=dt.UTC)
    return connection, data.get("interface", "")[:8], start, end


@tenant_required
def replay_new(request: HttpRequest) -> HttpResponse:
    """GET: the form (ids may come prefilled from a message page). POST: step 1 shows the
    checks; step 2 (``request=1``) records the request."""
    if not _has(request, Role.MESSAGE_OPERATOR):
        return _refuse(request, "message operator")
    data = request.POST if request.method == "POST" else request.GET
    kind = data.get("kind", ReplayKind.INBOUND)
    context: dict[str, Any] = {
        "kinds": ReplayKind.choices,
        "reasons": ReplayReason.choices,
        "connections": list(Connection.objects.select_related("identity").order_by("id")),
        "channels": list(
            Channel.objects.filter(direction="inbound").order_by("interface_id").distinct()
        ),
        "data": data,
        "kind": kind,
    }
    if request.method != "POST":
        return render(request, "console/replays/new.html", context)
    window: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    try:
        if kind in (ReplayKind.DIP_REPLAY, ReplayKind.DIP_REQUEUE):
            connection, interface_id, start, end = _window(data)
            plan: ReplayPlan = replays.plan_window(
                kind=kind,
                connection=connection,
                interface_id=interface_id,
                window_from=start,
                window_to=end,
            )
            window = {"interface_id": interface_id, "window_from": start, "window_to": end}
            selection = {"window": [start.isoformat(), end.isoformat()], "channel": interface_id}
        else:
            ids, selection = _selected(data, kind)
            plan = replays.plan_replay(kind=kind, message_ids=ids)
        if data.get("request") == "1":
            replay = replays.request_replay(
                plan=plan,
                reason_code=data.get("reason_code", ""),
                reason_text=data.get("reason_text", ""),
                by=operator_of(request),
                selection=selection,
                **window,
            )
            messages.success(
                request,
                f"Replay {replay.id} requested: "
                + (
                    "it waits for an approver (production)."
                    if replay.state == ReplayState.PENDING
                    else "it runs now."
                ),
            )
            return redirect("console:replay-detail", replay_id=replay.id)
    except ReplayRefused as exc:
        context["error"] = str(exc)
        return render(request, "console/replays/new.html", context, status=400)
    context["plan"] = plan
    context["selection"] = selection
    return render(request, "console/replays/new.html", context)


@tenant_required
def replay_detail(request: HttpRequest, replay_id: int) -> HttpResponse:
    if not _has(request, *METADATA_ROLES):
        return _refuse(request, "a role that handles messages")
    replay = selectors.get_replay(replay_id=replay_id)
    if replay is None:
        raise Http404("no such replay")
    may_decide = (
        replay.state == ReplayState.PENDING
        and _has(request, Role.APPROVER)
        and replay.requested_by_user_id != request.user.pk
    )
    affected = list(Message.objects.filter(id__in=list(replay.message_ids)).order_by("id")[:500])
    return render(
        request,
        "console/replays/detail.html",
        {"r": replay, "may_decide": may_decide, "affected": affected},
    )


@tenant_required
@require_POST
def replay_decide(request: HttpRequest, replay_id: int) -> HttpResponse:
    if not _has(request, Role.APPROVER):
        return _refuse(request, "approver")
    if selectors.get_replay(replay_id=replay_id) is None:
        raise Http404("no such replay")
    decision = request.POST.get("decision", "")
    note = request.POST.get("note", "")
    try:
        if decision == "approve":
            replays.approve_replay(replay_id=replay_id, by=operator_of(request), note=note)
            messages.success(request, f"Replay {replay_id} approved: it runs now.")
        elif decision == "refuse":
            replays.refuse_replay(replay_id=replay_id, by=operator_of(request), note=note)
            messages.success(request, f"Replay {replay_id} refused: nothing moves.")
        else:
            messages.error(request, "Approve or refuse.")
    except ReplayRefused as exc:
        messages.error(request, str(exc))
    return redirect("console:replay-detail", replay_id=replay_id)
