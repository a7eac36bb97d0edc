"""Outbound in the console: the list, each message with its attempts and timeline, resubmitting a
parked message with a reason, and a submission form for operators (the API's service behind it)."""

from __future__ import annotations

import json

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.roles import METADATA_ROLES
from console.views.home import tenant_required
from messaging.outbound import breaker, selectors
from messaging.outbound.services import (
    ResubmitRefused,
    SubmissionInvalid,
    resubmit_message,
    submit_messages,
)
from messaging.store import selectors as store_selectors
from messaging.store.states import OutboundState
from tenants import selectors as tenant_selectors
from tenants.models import Direction, Role


def _may_see(request: HttpRequest) -> bool:
    # Viewers see aggregates only (DESIGN section 3): the same rule as the inbound message pages.
    return tenant_selectors.user_has_role(request.membership, *METADATA_ROLES)  # type: ignore[attr-defined]


def _operator(request: HttpRequest) -> bool:
    return tenant_selectors.user_has_role(request.membership, Role.MESSAGE_OPERATOR)  # type: ignore[attr-defined]


def _forbidden(request: HttpRequest) -> HttpResponse:
    return render(request, "console/403.html", {"need": "message operator"}, status=403)


class SubmitForm(forms.Form):
    channel = forms.TypedChoiceField(coerce=int)
    submission = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false"}),
        help_text="The message as JSON: event_code, custom_block and the envelope facts "
        "(primary_recipients, mpan, distributor_dip_id, gsp_group_id, correlation_id).",
    )

    def __init__(self, *args: object, channels: list, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        field = self.fields["channel"]
        assert isinstance(field, forms.TypedChoiceField)
        field.choices = [(c.id, f"{c.interface_id} on {c.connection}") for c in channels]

    def clean_submission(self) -> object:
        try:
            return json.loads(self.cleaned_data["submission"])
        except ValueError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from exc


class ResubmitForm(forms.Form):
    reason = forms.CharField(max_length=500)


def _channels() -> list:
    return [c for c in tenant_selectors.list_channels() if c.direction == Direction.OUTBOUND]


@tenant_required
def outbound_list(request: HttpRequest) -> HttpResponse:
    if not _may_see(request):
        return render(
            request, "console/403.html", {"need": "a role that handles messages"}, status=403
        )
    state = request.GET.get("state", "")
    if state not in OutboundState:
        state = ""
    rows = selectors.list_outbound_messages(state=state or None, limit=200)
    breakers = {
        c.connection_id: breaker.get_breaker(connection_id=c.connection_id) for c in _channels()
    }
    # The backlog at a glance from the store's counters (no message is counted here).
    counts = [
        {"interface_id": interface_id, "state": name, "count": count}
        for (_direction, interface_id, name), count in sorted(
            store_selectors.state_counts(direction="outbound").items()
        )
    ]
    context = {
        "counts": counts,
        "outbox": selectors.list_outbox_status(),
        "rows": rows,
        "state": state,
        "states": [s.value for s in OutboundState],
        "breakers": [b for b in breakers.values() if b is not None],
        "is_operator": _operator(request),
        "form": SubmitForm(channels=_channels()) if _operator(request) else None,
    }
    if request.htmx and request.GET.get("part") == "outbox":  # type: ignore[attr-defined]
        return render(request, "console/outbound/list.html#outbox-status", context)
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/outbound/list.html#outbound-table", context)
    return render(request, "console/outbound/list.html", context)


@tenant_required
def outbound_detail(request: HttpRequest, message_id: int) -> HttpResponse:
    if not _may_see(request):
        return render(
            request, "console/403.html", {"need": "a role that handles messages"}, status=403
        )
    detail = selectors.get_outbound_detail(message_id=message_id)
    return render(
        request,
        "console/outbound/detail.html",
        {
            "message": detail.message,
            "timeline": detail.timeline,
            "exchanges": detail.exchanges,
            "is_operator": _operator(request),
            "resubmit_form": ResubmitForm() if detail.message.state == "failed" else None,
        },
    )


@tenant_required
@require_POST
def outbound_resubmit(request: HttpRequest, message_id: int) -> HttpResponse:
    if not _operator(request):
        return _forbidden(request)
    selectors.get_outbound_message(message_id=message_id)  # another tenant's or none: 404
    form = ResubmitForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the message is resubmitted.")
    else:
        try:
            resubmit_message(
                message_id=message_id,
                reason=form.cleaned_data["reason"],
                actor=request.user.get_username(),
            )
            messages.success(request, "Resubmitted: it goes out again with the same reference.")
        except ResubmitRefused as exc:
            messages.error(request, str(exc))
    return redirect("console:outbound-detail", message_id=message_id)


@tenant_required
@require_POST
def outbound_submit(request: HttpRequest) -> HttpResponse:
    if not _operator(request):
        return _forbidden(request)
    channels = _channels()
    form = SubmitForm(request.POST, channels=channels)
    problems: list[dict[str, str]] = []
    if form.is_valid():
        channel = tenant_selectors.get_channel(channel_id=form.cleaned_data["channel"])
        try:
            ids = submit_messages(
                channel=channel,
                items=[form.cleaned_data["submission"]],
                actor=request.user.get_username(),
                path="$",
            )
        except SubmissionInvalid as exc:
            problems = [p.as_dict() for p in exc.problems]
        else:
            messages.success(request, "Accepted: a worker sends it now.")
            return redirect("console:outbound-detail", message_id=ids[0])
    context = {
        "rows": selectors.list_outbound_messages(limit=200),
        "state": "",
        "states": [s.value for s in OutboundState],
        "breakers": [],
        "outbox": selectors.list_outbox_status(),
        "is_operator": True,
        "form": form,
        "problems": problems,
    }
    return render(request, "console/outbound/list.html", context, status=400)
