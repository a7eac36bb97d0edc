"""Messages and exceptions: search the tenant's DIP messages, open one (timeline, findings, the
raw bytes beside the normalised events, the DIP certificate that signed it), and the exception
queue. Message content is shown only to roles that handle content."""

from __future__ import annotations

import datetime as dt

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from console.views.home import tenant_required
from messaging.inbound.selectors import MessageFilter, get_message_detail, list_messages
from messaging.store.states import InboundState, OutboundState
from tenants import selectors
from tenants.models import Role

PAGE_SIZE = 50
# Who may see message metadata (viewers see aggregates only) and who may see content.
METADATA_ROLES = (
    Role.TENANT_ADMIN,
    Role.MESSAGE_OPERATOR,
    Role.APPROVER,
    Role.AUDITOR,
    Role.CERTIFICATE_ADMIN,
)
CONTENT_ROLES = (Role.MESSAGE_OPERATOR, Role.AUDITOR)


def _may(request: HttpRequest, roles: tuple[str, ...]) -> bool:
    return selectors.user_has_role(request.membership, *roles)  # type: ignore[attr-defined]


def _refuse(request: HttpRequest) -> HttpResponse:
    return render(request, "console/403.html", {"need": "a role that handles messages"}, status=403)


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


@tenant_required
def message_list(request: HttpRequest) -> HttpResponse:
    if not _may(request, METADATA_ROLES):
        return _refuse(request)
    q = request.GET
    before = q.get("before", "")
    filters = MessageFilter(
        text=q.get("q", "")[:200],
        interface_id=q.get("interface", "")[:8],
        state=q.get("state", "")[:20],
        direction=q.get("direction", "") if q.get("direction") in ("inbound", "outbound") else "",
        date_from=_date(q.get("from", "")),
        date_to=_date(q.get("to", "")),
        before_id=int(before) if before.isdigit() else None,
    )
    messages = list_messages(filters=filters, limit=PAGE_SIZE)
    context = {
        "messages": messages,
        "filters": filters,
        "q": q,
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
    detail = get_message_detail(message_id=message_id, with_content=_may(request, CONTENT_ROLES))
    if detail is None:
        raise Http404("no such message")
    return render(
        request,
        "console/messages/detail.html",
        {"d": detail, "m": detail.message, "may_see_content": _may(request, CONTENT_ROLES)},
    )
