"""CSV of the lists a person can see, with the same filters as the page and within the same
rights: the same role checks as the pages, and the MPAN and business key masked for roles without
content rights. Streamed row by row from a server-side cursor, so an export of millions of rows
holds neither the rows nor the file in memory.

The response is streamed after the view has returned, outside the request's tenant context; the
generator opens its own ``tenant_context`` (and transaction, which the server-side cursor needs)
for the tenant the request was made for.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from console.roles import ACTIVITY_ROLES, mask, mask_mpans_in, may_open, may_see_content
from console.views.exceptions import exception_filter
from console.views.home import tenant_required
from console.views.messages import message_filter
from core.audit import record_event
from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.exceptions.selectors import filter_exceptions
from messaging.inbound.selectors import filter_messages
from messaging.models import Message
from messaging.store.states import OutboundState
from tenants import selectors

CHUNK = 2000
MESSAGE_COLUMNS = [
    "id",
    "created_at",
    "direction",
    "interface_id",
    "event_code",
    "state",
    "transaction_id",
    "sender_unique_reference",
    "correlation_id",
    "mpan",
    "business_key",
    "attempts",
    "state_changed_at",
    "connection_id",
    "channel_id",
]
SENSITIVE = {"mpan", "business_key"}


class _Echo:
    """A file whose write returns the line, for csv.writer inside a generator."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    text = str(value)
    # A cell a spreadsheet would run as a formula is quoted as text (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _stream(
    *,
    tenant_id: Any,
    header: list[str],
    rows: Callable[[], Iterable[list[Any]]],
    filename: str,
) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        with tenant_context(tenant_id):
            for row in rows():
                yield writer.writerow([_cell(v) for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _refuse(request: HttpRequest, need: str) -> HttpResponse:
    return render(request, "console/403.html", {"need": need}, status=403)


def _record(request: HttpRequest, what: str, detail: dict[str, Any]) -> None:
    record_event(
        action="export.downloaded",
        actor=request.user.get_username(),
        actor_user_id=request.user.pk,
        object_type=what,
        detail=detail,
    )


def _message_rows(qs: QuerySet[Message], *, content: bool) -> Callable[[], Iterable[list[Any]]]:
    def rows() -> Iterator[list[Any]]:
        for values in qs.values_list(*MESSAGE_COLUMNS).iterator(chunk_size=CHUNK):
            yield [
                mask(v, content=content) if name in SENSITIVE else v
                for name, v in zip(MESSAGE_COLUMNS, values, strict=True)
            ]

    return rows


def _stamp() -> str:
    return timezone.now().strftime("%Y%m%dT%H%M%SZ")


@tenant_required
def messages_export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if not may_open(request.membership, "messages"):  # type: ignore[attr-defined]
        return _refuse(request, "a role that handles messages")
    content = may_see_content(request.membership)  # type: ignore[attr-defined]
    filters, problems = message_filter(request.GET, content=content)
    if problems:
        return HttpResponse("\n".join(problems), status=400, content_type="text/plain")
    qs = filter_messages(filters=filters)
    _record(request, "messages", {"query": request.GET.urlencode()[:500], "masked": not content})
    return _stream(
        tenant_id=request.tenant.id,  # type: ignore[attr-defined]
        header=MESSAGE_COLUMNS,
        rows=_message_rows(qs, content=content),
        filename=f"messages-{_stamp()}.csv",
    )


@tenant_required
def outbound_export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if not may_open(request.membership, "outbound"):  # type: ignore[attr-defined]
        return _refuse(request, "a role that handles messages")
    content = may_see_content(request.membership)  # type: ignore[attr-defined]
    qs = Message.objects.filter(direction="outbound").order_by("-id")
    state = request.GET.get("state", "")
    if state:
        if state not in OutboundState:
            return HttpResponse(
                f"state: not an outbound state: {state[:20]!r}",
                status=400,
                content_type="text/plain",
            )
        qs = qs.filter(state=state)
    _record(request, "outbound", {"state": state, "masked": not content})
    return _stream(
        tenant_id=request.tenant.id,  # type: ignore[attr-defined]
        header=MESSAGE_COLUMNS,
        rows=_message_rows(qs, content=content),
        filename=f"outbound-{_stamp()}.csv",
    )


EXCEPTION_COLUMNS = [
    "id",
    "created_at",
    "state",
    "category",
    "severity",
    "owner_queue",
    "to_act",
    "code",
    "title",
    "direction",
    "interface_id",
    "transaction_id",
    "message_id",
    "occurrences",
    "updated_at",
    "resolved_at",
    "resolution",
]


@tenant_required
def exceptions_export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if not may_open(request.membership, "exceptions"):  # type: ignore[attr-defined]
        return _refuse(request, "a role that handles messages")
    # The same filter as the exceptions page (state, category, severity, whose, past SLA).
    filters = exception_filter(request, request.GET)
    qs = filter_exceptions(filters).order_by("-created_at", "-id")
    content = may_see_content(request.membership)  # type: ignore[attr-defined]
    _record(request, "exceptions", {**filters.as_params(), "masked": not content})
    title = EXCEPTION_COLUMNS.index("title")

    def rows() -> Iterator[list[Any]]:
        for values in qs.values_list(*EXCEPTION_COLUMNS).iterator(CHUNK):
            row = list(values)
            row[title] = mask_mpans_in(row[title], content=content)
            yield row

    return _stream(
        tenant_id=request.tenant.id,  # type: ignore[attr-defined]
        header=EXCEPTION_COLUMNS,
        rows=rows,
        filename=f"exceptions-{_stamp()}.csv",
    )


ACTIVITY_COLUMNS = ["occurred_at", "category", "action", "actor", "object_type", "object_id"]


@tenant_required
def activity_export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if not selectors.user_has_role(request.membership, *ACTIVITY_ROLES):  # type: ignore[attr-defined]
        return _refuse(request, "tenant admin or auditor")
    qs = AuditEvent.objects.order_by("-occurred_at")
    category = request.GET.get("category", "")
    if category in {"activity", "security"}:
        qs = qs.filter(category=category)
    action = request.GET.get("action", "").strip()
    if action:
        qs = qs.filter(action__startswith=action)
    _record(request, "activity", {"category": category, "action": action[:100]})

    def rows() -> Iterator[list[Any]]:
        yield from (list(r) for r in qs.values_list(*ACTIVITY_COLUMNS).iterator(CHUNK))

    return _stream(
        tenant_id=request.tenant.id,  # type: ignore[attr-defined]
        header=ACTIVITY_COLUMNS,
        rows=rows,
        filename=f"activity-{_stamp()}.csv",
    )
