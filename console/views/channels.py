"""A channel's page: its settings, the change awaiting approval, and its change history.

Changing a channel is a proposal (tenant admins and message operators); on a production
connection an approver who is not the proposer approves it, which applies it; an applied change
can be rolled back. The rules live in ``tenants.channel_changes``: the views only check the role
a button needs and show what the service said.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.forms import ChannelChangeForm
from console.views.home import signed_in_user, tenant_required
from tenants import channel_changes, selectors
from tenants.models import ChannelChange, ChannelChangeState, Role


def _may(request: HttpRequest, *roles: Role) -> bool:
    return selectors.user_has_role(request.membership, *roles)  # type: ignore[attr-defined]


def roles_only(
    *roles: Role,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """POST by a member holding one of ``roles``; anyone else gets the 403 page."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @tenant_required
        @require_POST
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not _may(request, *roles):
                need = " or ".join(Role(r).label.lower() for r in roles)
                return render(request, "console/403.html", {"need": need}, status=403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def _change(change_id: int) -> ChannelChange:
    try:
        change = channel_changes.get_channel_change(change_id=change_id)
    except ChannelChange.DoesNotExist as exc:
        raise Http404("No such change") from exc
    selectors.get_channel(channel_id=change.channel_id)  # an API key's environment, as elsewhere
    return change


def _errors(exc: ValidationError) -> str:
    return "; ".join(exc.messages)


@tenant_required
def channel_detail(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = selectors.get_channel(channel_id=channel_id)
    changes = channel_changes.list_channel_changes(channel=channel)
    context = {
        "channel": channel,
        "settings": channel_changes.snapshot(channel),
        "changes": changes,
        "pending": next((c for c in changes if c.state == ChannelChangeState.PROPOSED), None),
        "form": ChannelChangeForm(channel=channel),
        "may_propose": _may(request, *channel_changes.PROPOSER_ROLES),
        "may_approve": _may(request, Role.APPROVER),
        "may_roll_back": _may(request, *channel_changes.ROLLBACK_ROLES),
        "production": channel.connection.environment == "PRD",
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/channels/detail.html#channel-history", context)
    return render(request, "console/channels/detail.html", context)


@roles_only(*channel_changes.PROPOSER_ROLES)
def channel_change_propose(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = selectors.get_channel(channel_id=channel_id)
    form = ChannelChangeForm(request.POST, channel=channel)
    if not form.is_valid():
        messages.error(request, "The change was not proposed: " + form.errors.as_text())
        return redirect("console:channel-detail", channel_id=channel.pk)
    try:
        change = channel_changes.propose_channel_change(
            channel=channel,
            changes=form.changes(),
            reason=form.cleaned_data["reason"],
            user=signed_in_user(request),
        )
    except ValidationError as exc:
        messages.error(request, "The change was not proposed: " + _errors(exc))
        return redirect("console:channel-detail", channel_id=channel.pk)
    messages.success(
        request,
        "Proposed: a second person with the approver role must approve it (production)."
        if change.requires_approval
        else "Applied (not a production connection, so no approval is needed).",
    )
    return redirect("console:channel-detail", channel_id=channel.pk)


@roles_only(Role.APPROVER)
def channel_change_approve(request: HttpRequest, change_id: int) -> HttpResponse:
    change = _change(change_id)
    try:
        channel_changes.approve_channel_change(
            change=change, user=signed_in_user(request), note=request.POST.get("note", "")
        )
        messages.success(request, "Approved and applied.")
    except ValidationError as exc:
        messages.error(request, "Not approved: " + _errors(exc))
    return redirect("console:channel-detail", channel_id=change.channel_id)


@roles_only(Role.APPROVER, *channel_changes.PROPOSER_ROLES)
def channel_change_reject(request: HttpRequest, change_id: int) -> HttpResponse:
    change = _change(change_id)
    try:
        channel_changes.reject_channel_change(
            change=change, user=signed_in_user(request), note=request.POST.get("note", "")
        )
        messages.success(request, "Rejected: nothing was changed.")
    except ValidationError as exc:
        messages.error(request, "Not rejected: " + _errors(exc))
    return redirect("console:channel-detail", channel_id=change.channel_id)


@roles_only(*channel_changes.ROLLBACK_ROLES)
def channel_change_rollback(request: HttpRequest, change_id: int) -> HttpResponse:
    change = _change(change_id)
    try:
        channel_changes.rollback_channel_change(
            change=change, user=signed_in_user(request), reason=request.POST.get("reason", "")
        )
        messages.success(request, "Rolled back: the channel has its previous settings again.")
    except ValidationError as exc:
        messages.error(request, "Not rolled back: " + _errors(exc))
    return redirect("console:channel-detail", channel_id=change.channel_id)
