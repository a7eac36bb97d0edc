"""Messages and exceptions: search the tenant's DIP messages, open one (timeline, findings, the
raw bytes beside the normalised events, the DIP certificate that signed it, the other messages of
its business chain), and the exception queue. Message content, and the MPAN and business key, are
shown only to roles with content rights (console.roles)."""

from __future__ import annotations

import datetime as dt

from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render

from console.roles import METADATA_ROLES, may_see_content
from console.views.home import tenant_required
from messaging.inbound.selectors import (
    MessageFilter,
    get_message_detail,
    is_mpan,
    list_linked_messages,
    list_messages,
)
from messaging.store.states import InboundState, OutboundState
from tenants import selectors

PAGE_SIZE = 50


def _may(request: HttpRequest, roles: tuple[str, ...]) -> bool:
    return selectors.user_has_role(request.membership, *roles)  # type: ignore[attr-defined]


def _refuse(request: HttpRequest) -> HttpResponse:
    return render(request, "console/403.html", {"need": "a role that handles messages"}, status=403)


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def message_filter(q: QueryDict, *, content: bool) -> tuple[MessageFilter, list[str]]:
    """The filter a query string asks for, and the problems with it, each naming the field.

    Searching by MPAN is for roles with content rights: for anyone else it would tell whether a
    supply point has messages, which the masking is there to hide.
    """
    problems = []
    text = q.get("q", "")[:200].strip()
    if text and is_mpan(text) and not content:
        problems.append(
            "Search: searching by MPAN needs content rights (message operator or auditor)."
        )
        text = ""
    dates = {}
    for name in ("from", "to"):
        given = q.get(name) or ""
        dates[name] = _date(given)
        if given and dates[name] is None:
            problems.append(f"{name.title()}: not a date (YYYY-MM-DD): {given[:20]!r}.")
    before = q.get("before", "")
    direction = q.get("direction", "")
    return (
        MessageFilter(
            text=text,
            interface_id=q.get("interface", "")[:8].strip(),
            event_code=q.get("event", "")[:50].strip(),
            state=q.get("state", "")[:20],
            direction=direction if direction in ("inbound", "outbound") else "",
            date_from=dates["from"],
            date_to=dates["to"],
            before_id=int(before) if before.isdigit() else None,
        ),
        problems,
    )


@tenant_required
def message_list(request: HttpRequest) -> HttpResponse:
    if not _may(request, METADATA_ROLES):
        return _refuse(request)
    q = request.GET
    filters, problems = message_filter(q, content=may_see_content(request.membership))  # type: ignore[attr-defined]
    # A search that could not be made as asked shows nothing rather than something else.
    messages = [] if problems else list_messages(filters=filters, limit=PAGE_SIZE)
    export_query = q.copy()
    export_query.pop("before", None)
    context = {
        "messages": messages,
        "filters": filters,
        "problems": problems,
        "q": q,
        "export_query": export_query.urlencode(),
        "states": sorted({*InboundState, *OutboundState}),
        "next_before": messages[-1].id if len(messages) == PAGE_SIZE else None,
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/messages/list.html#message-table", context)
    return render(request, "console/messages/list.html", context)


@tenant_required
def message_detail(request: HttpRequest, message_id: int) -> HttpResponse:
    if not _may(request, METADATA_ROLES):
        return _refuse(request)
    content = may_see_content(request.membership)  # type: ignore[attr-defined]
    detail = get_message_detail(message_id=message_id, with_content=content)
    if detail is None:
        raise Http404("no such message")
    return render(
        request,
        "console/messages/detail.html",
        {
            "d": detail,
            "m": detail.message,
            "linked": list_linked_messages(message=detail.message),
        },
    )
