"""Enter the tenant context once per request, for console users and API clients alike."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from core.audit import record_event, request_source
from core.tenancy import environment_context, tenant_context, user_context
from tenants.authentication import (
    ApiKeyError,
    note_key_used,
    read_api_key,
    resolve_api_key,
    session_has_second_factor,
)
from tenants.selectors import (
    SESSION_ACTED_FOR_KEY,
    SESSION_PASSWORD_CHANGE_KEY,
    SESSION_TENANT_KEY,
    list_memberships_for_user,
)


class TenantMiddleware:
    """Act for one tenant for the whole request.

    An API key names its tenant and its environment. A signed-in user acts for the tenant chosen in the session (or
    their only one); the user context first lets RLS show them their own memberships. A session
    naming a tenant the user no longer belongs to is ignored. No tenant: queries see nothing.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.tenant = None  # type: ignore[attr-defined]
        request.membership = None  # type: ignore[attr-defined]
        request.memberships = []  # type: ignore[attr-defined]
        key = read_api_key(request)
        if key is not None:
            return self._as_api_client(request, key)
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return self.get_response(request)
        if request.session.get(SESSION_PASSWORD_CHANGE_KEY):
            return self._password_change_first(request)
        with user_context(user.pk):
            memberships = list_memberships_for_user(user=user)
            request.memberships = memberships  # type: ignore[attr-defined]
            chosen = request.session.get(SESSION_TENANT_KEY)
            membership = next((m for m in memberships if str(m.tenant_id) == chosen), None)
            if membership is None and len(memberships) == 1:
                membership = memberships[0]
            if membership is None:
                return self.get_response(request)
            if membership.tenant.require_second_factor and not session_has_second_factor(request):
                return self._second_factor_first(request)
            request.membership = membership  # type: ignore[attr-defined]
            request.tenant = membership.tenant  # type: ignore[attr-defined]
            with tenant_context(membership.tenant.id):
                self._record_acting_for(request, membership.tenant_id)
                return self.get_response(request)

    def _record_acting_for(self, request: HttpRequest, tenant_id: object) -> None:
        """Show the tenant this sign-in once the person acts for it, and only then: a tenant
        does not see sign-ins of its members that were made to act elsewhere."""
        recorded = request.session.get(SESSION_ACTED_FOR_KEY, [])
        if str(tenant_id) in recorded:
            return
        record_event(
            action="login.succeeded",
            actor=request.user.get_username(),
            actor_user_id=request.user.pk,
            category="security",
            source_address=request_source(request),
            detail={"second_factor": session_has_second_factor(request)},
        )
        request.session[SESSION_ACTED_FOR_KEY] = [*recorded, str(tenant_id)]

    def _password_change_first(self, request: HttpRequest) -> HttpResponse:
        """Someone else chose this account's password: only changing it (or leaving) is served."""
        if request.path in (reverse("console:account-password"), reverse("console:logout")):
            return self.get_response(request)
        messages.info(request, "Choose your own password first.")
        return redirect("console:account-password")

    def _second_factor_first(self, request: HttpRequest) -> HttpResponse:
        """The tenant requires a second factor this session has not given: only the person's
        own account pages (where one is set up, with an enrolment link), their invitations and
        signing out are served; everything else goes to set-up."""
        path = request.path
        if (
            path.startswith("/account/")
            or path.startswith(reverse("console:invitations"))
            or path == reverse("console:logout")
        ):
            return self.get_response(request)
        messages.info(
            request,
            "Your tenant requires an authenticator app: sign in again with it, or set one up"
            " with the enrolment link your tenant admin sends you.",
        )
        return redirect("console:account-mfa")

    def _as_api_client(self, request: HttpRequest, key: str) -> HttpResponse:
        try:
            client = resolve_api_key(key)
            with tenant_context(client.tenant_id):
                client = note_key_used(client)
        except ApiKeyError as exc:
            request.api_key_error = str(exc)  # type: ignore[attr-defined]
            return self.get_response(request)
        request.api_client = client  # type: ignore[attr-defined]
        # A key acts only in the environment it was issued for: another's objects are not found.
        with tenant_context(client.tenant_id), environment_context(client.environment):
            return self.get_response(request)
