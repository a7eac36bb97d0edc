"""API-key authentication for client systems.

The key is resolved once, in ``TenantMiddleware`` (which must enter the tenant context around the
whole request); this DRF class only reports the outcome, so a view never runs for a bad key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from django.http import HttpRequest
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from tenants.selectors import find_api_credential
from tenants.services import API_KEY_PREFIX, hash_api_secret


@dataclass(frozen=True)
class ApiClient:
    """The authenticated client system behind an API key."""

    tenant_id: str
    credential_id: int
    prefix: str
    scopes: list[str] = field(default_factory=list)
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def label(self) -> str:
        return f"api:{self.prefix}"


def session_has_second_factor(request: HttpRequest) -> bool:
    """Whether this session signed in with a second factor. django-otp's middleware gives the
    user is_verified(); where it did not run, nobody is verified."""
    return bool(getattr(request.user, "is_verified", lambda: False)())


def in_staff_role(request: HttpRequest, *roles: str) -> bool:
    """An active Busbar staff member holding one of ``roles`` (Django groups), or a superuser."""
    user = request.user
    return bool(
        user.is_active
        and user.is_staff
        and (user.is_superuser or user.groups.filter(name__in=list(roles)).exists())
    )


class ApiKeyError(Exception):
    """The request carried an API key that is malformed, unknown or revoked."""


def read_api_key(request: HttpRequest) -> str | None:
    """The key from ``Authorization: Api-Key <key>`` or ``X-API-Key``, or None when absent."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("api-key "):
        return header[8:].strip()
    return request.headers.get("X-API-Key") or None


def resolve_api_key(key: str) -> ApiClient:
    """Check a presented key against its stored hash; raises ApiKeyError naming the problem."""
    parts = key.split("_", 2)  # the secret itself may contain underscores
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        raise ApiKeyError("malformed API key: expected bb_<prefix>_<secret>")
    found = find_api_credential(prefix=parts[1])
    # Same message for unknown and wrong secret, so a caller cannot probe for prefixes.
    if found is None or not hmac.compare_digest(found[2], hash_api_secret(parts[2])):
        raise ApiKeyError("invalid API key")
    tenant_id, credential_id, _, scopes, revoked = found
    if revoked:
        raise ApiKeyError("this API key has been revoked")
    return ApiClient(
        tenant_id=tenant_id, credential_id=credential_id, prefix=parts[1], scopes=scopes
    )


def api_client(request: Request) -> ApiClient:
    """The client system behind an authenticated API request (the views require one)."""
    client = request.user
    if not isinstance(client, ApiClient):
        raise exceptions.NotAuthenticated()
    return client


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiClient, None] | None:
        django_request = request._request
        error = getattr(django_request, "api_key_error", None)
        if error:
            raise exceptions.AuthenticationFailed(error)
        client = getattr(django_request, "api_client", None)
        return (client, None) if client is not None else None

    def authenticate_header(self, request: Request) -> str:
        return 'Api-Key realm="busbar"'


class HasScope(permissions.BasePermission):
    """Allow a client whose key carries the view's ``required_scope``."""

    message = "this API key lacks the scope this operation needs"

    def has_permission(self, request: Request, view: object) -> bool:
        scope = getattr(view, "required_scope", None)
        user = request.user
        return isinstance(user, ApiClient) and (scope is None or scope in user.scopes)
