"""API-key authentication for client systems.

The key is resolved once, in ``TenantMiddleware`` (which must enter the tenant context around the
whole request); this DRF class only reports the outcome, so a view never runs for a bad key.
"""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass, field

from django.db import connection
from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from tenants.selectors import find_api_credential
from tenants.services import API_KEY_PREFIX, hash_api_secret

# One answer for every key that does not authenticate (unknown prefix, wrong secret, revoked), so
# that a caller learns nothing about which keys exist or once existed.
INVALID_KEY = "invalid API key"
_PREFIX_SHAPE = re.compile(r"^[0-9a-f]{1,16}$")
# last_used_at is a "roughly when" for the admin page: written at most once a minute per key.
LAST_USED_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class ApiClient:
    """The authenticated client system behind an API key."""

    tenant_id: str
    credential_id: int
    prefix: str
    scopes: list[str] = field(default_factory=list)
    environment: str = ""
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
    if not _PREFIX_SHAPE.match(parts[1]):
        raise ApiKeyError(INVALID_KEY)  # no issued key has such a prefix: no need to look
    found = find_api_credential(prefix=parts[1])
    if found is None or not hmac.compare_digest(found[2], hash_api_secret(parts[2])):
        raise ApiKeyError(INVALID_KEY)
    tenant_id, credential_id, _, scopes, revoked = found
    if revoked:
        raise ApiKeyError(INVALID_KEY)
    return ApiClient(
        tenant_id=tenant_id, credential_id=credential_id, prefix=parts[1], scopes=scopes
    )


# credential id -> (environment, when this process last wrote last_used_at), so that a busy key
# costs no database write, and no read beyond the prefix look-up, for a minute at a time.
_recently_used: dict[int, tuple[str, float]] = {}


def note_key_used(client: ApiClient) -> ApiClient:
    """Record that the key was used (at most once a minute per key across every process) and
    return the client with the environment its key was issued for.

    Needs the key's tenant context. The write is one conditional UPDATE in its own short
    transaction, so it never holds the row's lock for the length of the request it serves.
    """
    now = time.monotonic()
    remembered = _recently_used.get(client.credential_id)
    if remembered is not None and now - remembered[1] < LAST_USED_RESOLUTION_SECONDS:
        environment = remembered[0]
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH touched AS (
                    UPDATE tenants_apicredential SET last_used_at = now()
                    WHERE id = %(id)s
                      AND (last_used_at IS NULL OR last_used_at < now() - %(every)s * interval '1 second')
                    RETURNING id
                )
                SELECT environment FROM tenants_apicredential WHERE id = %(id)s
                """,
                {"id": client.credential_id, "every": LAST_USED_RESOLUTION_SECONDS},
            )
            row = cursor.fetchone()
        if row is None:  # revoked and deleted between the two looks: treat as unknown
            raise ApiKeyError(INVALID_KEY)
        environment = row[0]
        _recently_used[client.credential_id] = (environment, now)
    return ApiClient(
        tenant_id=client.tenant_id,
        credential_id=client.credential_id,
        prefix=client.prefix,
        scopes=client.scopes,
        environment=environment,
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


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Declares the key scheme in the OpenAPI document, so API docs can offer to authorise."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": (
                "A client system's key, bb_<prefix>_<secret>, issued by a tenant admin under "
                "Settings for one DIP environment. Send it as X-API-Key: <key> or as "
                "Authorization: Api-Key <key>."
            ),
        }


class HasScope(permissions.BasePermission):
    """Allow a client whose key carries the view's ``required_scope``."""

    message = "this API key lacks the scope this operation needs"

    def has_permission(self, request: Request, view: object) -> bool:
        scope = getattr(view, "required_scope", None)
        user = request.user
        return isinstance(user, ApiClient) and (scope is None or scope in user.scopes)
