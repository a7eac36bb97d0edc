"""Request-wide middleware that belongs to no app."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.cache import patch_cache_control

from core.logging import request_id_var

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Give every request a correlation id (reusing a sane incoming ``X-Request-ID``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


# JSON spells NUL as \u0000; an even run of backslashes before it is escaped backslashes instead.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _nul_problem(request: HttpRequest) -> tuple[str, str] | None:
    """Name the first place in the request that carries a NUL character, or None.

    Returns (where, what): ``where`` is a header's name, ``$`` for a JSON body, or the query or
    form field's name, as the API's error entries name places; ``what`` says it in words.

    PostgreSQL text cannot hold NUL, so such a value would fail at the database as a 500 wherever
    it got past a form. Checked: header and cookie values, query-string and form field names and
    values, uploaded file names, and JSON bodies (raw or \\u0000-escaped).
    """
    for key, value in request.META.items():
        if key.startswith("HTTP_") and isinstance(value, str) and "\x00" in value:
            header = key[5:].replace("_", "-").title()
            return header, f"the {header} header contains a NUL character"
    for name, value in request.COOKIES.items():
        if "\x00" in name or "\x00" in value:
            return "Cookie", "a cookie contains a NUL character"
    for where, data in (("query parameter", request.GET), ("form field", request.POST)):
        for name, values in data.lists():
            if "\x00" in name:
                return where, f"a {where} name contains a NUL character"
            if any("\x00" in value for value in values if isinstance(value, str)):
                return name, f"the {where} {name!r} contains a NUL character"
    for name, uploads in request.FILES.lists():
        if any("\x00" in (getattr(upload, "name", "") or "") for upload in uploads):
            return name, f"the name of the file uploaded as {name!r} contains a NUL character"
    content_type = request.content_type or ""
    if content_type == "application/json" or content_type.endswith("+json"):
        body = request.body
        if b"\x00" in body or (b"\\u0000" in body and _JSON_NUL.search(body)):
            return "$", "the JSON body contains a NUL character"
    return None


class RejectNulMiddleware:
    """Refuse, with a 400 naming where, any request whose input carries a NUL character.

    One check at the edge instead of one in every view: a NUL reaching a query is a database
    error (a 500), and some values (the login form's username, an API key's prefix, query
    filters) are read before any form validates them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            found = _nul_problem(request)
        except UnicodeDecodeError:
            found = ("$", "the request is not valid UTF-8")
        if found is None:
            return self.get_response(request)
        where, problem = found
        if request.path.startswith("/api/") or (request.content_type or "").endswith("json"):
            return JsonResponse(
                {
                    "detail": f"The request is invalid: {problem}.",
                    "errors": [{"path": where, "message": problem}],
                },
                status=400,
            )
        return HttpResponseBadRequest(
            f"Bad request: {problem}.\n", content_type="text/plain; charset=utf-8"
        )


class NoStoreMiddleware:
    """Tell browsers and proxies to keep no copy of any page or API answer.

    Console pages show tenant data and sometimes a secret shown once (an API key, a temporary
    password, recovery codes); a shared or back-button cache must not hold them. One rule for every
    dynamic answer is simpler to trust than a decorator remembered on each view. Static files are
    answered by whitenoise before this runs, and stay cacheable.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        patch_cache_control(response, no_store=True, private=True)
        return response
