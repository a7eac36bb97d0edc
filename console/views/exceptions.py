"""The exception queue in the console: queues per category and severity with age and SLA, "whose
is it" tabs that lead with what is the client's own, one exception with its history, and the
handling actions (assign, comment, resolve with a code, reprocess) on one exception or in bulk on
a filter, after a confirmation that says how many will be touched.

Anyone who may see message metadata sees the queue; only message operators act on it."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.roles import METADATA_ROLES
from console.views.home import tenant_required
from core.audit import request_source
from messaging.exceptions import handling
from messaging.exceptions.handling import HandlingRefused, Operator
from messaging.exceptions.models import Category, ExceptionState, ResolutionCode, Severity
from messaging.exceptions.selectors import (
    ExceptionFilter,
    filter_exceptions,
    get_exception,
    list_handling,
    queue_summary,
    whose_counts,
)
from tenants import selectors as tenant_selectors
from tenants.models import Membership, Role

ACTIONS = ("assign", "comment", "resolve", "reprocess")
PAGE = 200


def _membership(request: HttpRequest) -> Membership:
    return request.membership  # type: ignore[attr-defined]


def _may_see(request: HttpRequest) -> bool:
    return tenant_selectors.user_has_role(_membership(request), *METADATA_ROLES)


def _operator(request: HttpRequest) -> bool:
    return tenant_selectors.user_has_role(_membership(request), Role.MESSAGE_OPERATOR)


def _refuse(request: HttpRequest, need: str = "a role that handles messages") -> HttpResponse:
    return render(request, "console/403.html", {"need": need}, status=403)


def operator_of(request: HttpRequest) -> Operator:
    return Operator(
        name=request.user.get_username(),
        user_id=request.user.pk,
        source_address=request_source(request),
    )


def exception_filter(request: HttpRequest, data: Any) -> ExceptionFilter:
    return ExceptionFilter(
        state=data.get("state", ExceptionState.OPEN) or ExceptionState.OPEN,
        category=data.get("category", ""),
        severity=data.get("severity", ""),
        whose=data.get("whose", ""),
        overdue=data.get("overdue") == "1",
        interface_id=data.get("interface", ""),
        assignee_membership_id=_membership(request).id,
    ).clean()


def _operators() -> list[Membership]:
    return [
        m
        for m in Membership.objects.select_related("user").order_by("user__username")
        if Role.MESSAGE_OPERATOR in m.roles
    ]


@tenant_required
def exception_list(request: HttpRequest) -> HttpResponse:
    if not _may_see(request):
        return _refuse(request)
    filters = exception_filter(request, request.GET)
    rows = list(
        filter_exceptions(filters)
        .select_related("assignee__user")
        .order_by("sla_due_at", "-created_at", "-id")[:PAGE]
    )
    context = {
        "exceptions": rows,
        "f": filters,
        "whose": whose_counts(membership_id=_membership(request).id),
        "summary": queue_summary(),
        "now": timezone.now(),
        "categories": Category.choices,
        "severities": Severity.choices,
        "exception_states": ExceptionState.choices,
        "resolution_codes": [c for c in ResolutionCode.choices if c[0] != "automatic"],
        "operators": _operators(),
        "is_operator": _operator(request),
        "filter_query": "&".join(f"{k}={v}" for k, v in filters.as_params().items() if v),
        "export_query": request.GET.urlencode(),
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/exceptions/list.html#exception-table", context)
    return render(request, "console/exceptions/list.html", context)


@tenant_required
def exception_detail(request: HttpRequest, exception_id: int) -> HttpResponse:
    if not _may_see(request):
        return _refuse(request)
    exc = get_exception(exception_id=exception_id)
    if exc is None:
        raise Http404("no such exception")
    return render(
        request,
        "console/exceptions/detail.html",
        {
            "e": exc,
            "history": list_handling(exception_id=exc.id),
            "now": timezone.now(),
            "is_operator": _operator(request),
            "resolution_codes": [c for c in ResolutionCode.choices if c[0] != "automatic"],
            "operators": _operators(),
        },
    )


def _act(request: HttpRequest, ids: list[int]) -> str:
    """Run the posted action on ``ids``; returns what to tell the person. Raises
    HandlingRefused."""
    action = request.POST.get("action", "")
    by = operator_of(request)
    text = request.POST.get("text", "")
    if action == "assign":
        raw = request.POST.get("assignee", "")
        membership_id = int(raw) if raw.isdigit() else None
        n = handling.assign_exceptions(
            exception_ids=ids, membership_id=membership_id, by=by, text=text
        )
        return (
            f"{n} exception{'s' if n != 1 else ''} {'assigned' if membership_id else 'unassigned'}."
        )
    if action == "comment":
        n = handling.comment_on_exceptions(exception_ids=ids, text=text, by=by)
        return f"Comment added to {n} exception{'s' if n != 1 else ''}."
    if action == "resolve":
        n = handling.resolve_by_person(
            exception_ids=ids, code=request.POST.get("code", ""), text=text, by=by
        )
        return f"{n} exception{'s' if n != 1 else ''} resolved."
    if action == "reprocess":
        report = handling.reprocess_exceptions(exception_ids=ids, by=by)
        parts = [
            f"{len(report.resolved)} now pass and are resolved",
            f"{len(report.still_failing)} still fail",
            f"{len(report.resubmitted)} outbound back in the outbox",
        ]
        if report.skipped:
            parts.append(
                f"{len(report.skipped)} skipped ("
                + "; ".join(f"{k}: {v}" for k, v in list(report.skipped.items())[:3])
                + ")"
            )
        return "Reprocessed: " + ", ".join(parts) + "."
    raise HandlingRefused(f"choose an action ({', '.join(ACTIONS)})")


@tenant_required
@require_POST
def exception_act(request: HttpRequest, exception_id: int) -> HttpResponse:
    if not _operator(request):
        return _refuse(request, "message operator")
    if get_exception(exception_id=exception_id) is None:
        raise Http404("no such exception")
    try:
        messages.success(request, _act(request, [exception_id]))
    except HandlingRefused as exc:
        messages.error(request, str(exc))
    return redirect("console:exception-detail", exception_id=exception_id)


@tenant_required
@require_POST
def exception_bulk(request: HttpRequest) -> HttpResponse:
    """Bulk action on what a filter selects. The first post answers with a confirmation naming
    how many exceptions it will touch; the action runs only when the confirmed count still
    matches (the queue may have moved in between: then it asks again)."""
    if not _operator(request):
        return _refuse(request, "message operator")
    filters = exception_filter(request, request.POST)
    selected = list(filter_exceptions(filters).order_by("id").values_list("id", flat=True))
    action = request.POST.get("action", "")
    confirmed = request.POST.get("confirm", "")
    back = (
        reverse("console:exceptions")
        + "?"
        + "&".join(f"{k}={v}" for k, v in filters.as_params().items() if v)
    )
    if action not in ACTIONS:
        messages.error(request, f"Choose an action ({', '.join(ACTIONS)}).")
        return redirect(back)
    if not selected:
        messages.error(request, "The filter selects no exception.")
        return redirect(back)
    if len(selected) > handling.BULK_LIMIT:
        messages.error(
            request,
            f"The filter selects {len(selected)} exceptions; at most {handling.BULK_LIMIT} at "
            "once: narrow it.",
        )
        return redirect(back)
    if confirmed != str(len(selected)):
        context = {
            "count": len(selected),
            "action": action,
            "post": [
                (k, v)
                for k, v in request.POST.items()
                if k not in ("csrfmiddlewaretoken", "confirm")
            ],
            "changed": bool(confirmed),
            "back": back,
        }
        fragment = request.htmx  # type: ignore[attr-defined]
        template = (
            "console/exceptions/_bulk_confirm.html" if fragment else "console/exceptions/bulk.html"
        )
        return render(request, template, context)
    try:
        messages.success(request, _act(request, selected))
    except HandlingRefused as exc:
        messages.error(request, str(exc))
    return redirect(back)
