"""Who may do what: every console URL and every API operation, for every kind of caller, on their
own objects and on another tenant's, checked against one table written down below.

The URLs come from the URLconf (``get_resolver()``) and the API operations from the OpenAPI
schema, so a new URL or operation with no row in the table fails ``test_every_url_and_operation_
has_a_row``; a row whose URL is gone fails it too.

To add a URL: one line in CONSOLE (console pages, health, docs) or API (operations, by
operationId), with the method to call and, when the URL names an object, one line for the acme
object and one for the globex object. Outcomes, from the response alone:

    ok      let through to the view's work (2xx, 400 on the empty body sent, or a redirect that is
            neither of the two below)
    login   sent to sign in (console or staff admin login page)
    mfa     sent to set up or give a second factor
    401     not authenticated (API, metrics)
    403     authenticated but not allowed
    404     hidden: looks like nothing is there

A 5xx is always a failure. Each call runs in its own savepoint over one shared set-up (built
once for the module), so an action allowed in one cell never changes another cell's answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.tokens import default_token_generator
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django_otp import DEVICE_ID_SESSION_KEY
from drf_spectacular.generators import SchemaGenerator

from core.models import TOTPSecondFactor
from core.tenancy import tenant_context
from messaging.events import endpoints as downstream
from messaging.events import services as events
from messaging.evidence import packs
from messaging.exceptions.models import MessageException
from messaging.exceptions.services import ExceptionSpec, raise_exceptions
from messaging.models import BreakGlassGrant, Event, EvidencePack, PackState
from messaging.replay.models import Replay
from messaging.store import services as store
from tenants import certificates, services
from tenants.enrolment import hash_token
from tenants.models import (
    ApiCredential,
    Channel,
    ChannelChange,
    Connection,
    EnrolmentLink,
    Membership,
    Role,
    StaffRole,
)
from tests.conftest import build_world
from tests.pki import TestCA, key_pem, new_key, pem

# --- the table -----------------------------------------------------------------------------------
# Console personas: anon (nobody signed in); acme members holding one role each: admin (tenant
# admin), cert (certificate admin), oper (message operator), appr (approver), view (viewer), audit
# (auditor); glbx: globex's tenant admin (another tenant's admin); sup: provider support staff
# without a verified second factor; sup2: the same with one.
CONSOLE_PERSONAS = ("anon", "admin", "cert", "oper", "appr", "view", "audit", "glbx", "sup", "sup2")
CONSOLE = """
# route                        method object anon  admin cert  oper  appr  view  audit glbx  sup   sup2
healthz                          GET   -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
readyz                           GET   -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
metrics                          GET   -     401   401   401   401   401   401   401   401   401   401
favicon                          GET   -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
api:schema                       GET   -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
api:docs                         GET   -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
api:docs-try                     GET   -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
admin:index                      GET   -     login login login login login login login login login ok
console:login                    GET   -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
console:login                    POST  -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
console:login-verify             GET   -     login login login login login login login login login login
console:logout                   POST  -     login login login login login login login login login login
console:tenant-switch            POST  -     login 404   404   404   404   404   404   404   404   404
console:account-mfa              GET   -     login ok    ok    ok    ok    ok    ok    ok    ok    ok
console:account-password         GET   -     login ok    ok    ok    ok    ok    ok    ok    ok    ok
console:set-password             GET   acme  ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
console:set-password             GET   globex ok   ok    ok    ok    ok    ok    ok    ok    ok    ok
console:mfa-enrol                GET   acme  login 404   404   404   404   mfa   404   404   404   404
console:mfa-enrol                GET   globex login 404  404   404   404   404   404   mfa   404   404
console:invitations              GET   -     login ok    ok    ok    ok    ok    ok    ok    ok    ok
console:invitation-accept        POST  acme  login 404   404   404   404   404   404   ok    404   404
console:invitation-accept        POST  globex login ok   404   404   404   404   404   404   404   404
console:invitation-decline       POST  acme  login 404   404   404   404   404   404   ok    404   404
console:invitation-decline       POST  globex login ok   404   404   404   404   404   404   404   404
# provider staff acting for no tenant land on Support (a redirect there)
console:home                     GET   -     login ok    ok    ok    ok    ok    ok    ok    ok    ok
console:flows                    GET   -     login ok    ok    ok    ok    ok    ok    ok    403   403
console:messages                 GET   -     login ok    ok    ok    ok    403   ok    ok    403   403
console:messages-export          GET   -     login ok    ok    ok    ok    403   ok    ok    403   403
console:message-detail           GET   acme  login ok    ok    ok    ok    403   ok    404   403   403
console:message-detail           GET   globex login 404  404   404   404   403   404   ok    403   403
console:exceptions               GET   -     login ok    ok    ok    ok    403   ok    ok    403   403
console:exceptions-export        GET   -     login ok    ok    ok    ok    403   ok    ok    403   403
console:exception-bulk           POST  -     login 403   403   ok    403   403   403   403   403   403
console:exception-detail         GET   acme  login ok    ok    ok    ok    403   ok    404   403   403
console:exception-detail         GET   globex login 404  404   404   404   403   404   ok    403   403
console:exception-act            POST  acme  login 403   403   ok    403   403   403   403   403   403
console:exception-act            POST  globex login 403  403   404   403   403   403   403   403   403
console:replays                  GET   -     login ok    ok    ok    ok    403   ok    ok    403   403
console:replay-new               POST  -     login 403   403   ok    403   403   403   403   403   403
console:replay-detail            GET   acme  login ok    ok    ok    ok    403   ok    404   403   403
console:replay-detail            GET   globex login 404  404   404   404   403   404   ok    403   403
console:replay-decide            POST  acme  login 403   403   403   ok    403   403   403   403   403
console:replay-decide            POST  globex login 403  403   403   404   403   403   403   403   403
console:outbound                 GET   -     login ok    ok    ok    ok    403   ok    ok    403   403
console:outbound-export          GET   -     login ok    ok    ok    ok    403   ok    ok    403   403
console:outbound-submit          POST  -     login 403   403   ok    403   403   403   403   403   403
console:outbound-detail          GET   acme  login ok    ok    ok    ok    403   ok    404   403   403
console:outbound-detail          GET   globex login 404  404   404   404   403   404   ok    403   403
console:outbound-resubmit        POST  acme  login 403   403   ok    403   403   403   403   403   403
console:outbound-resubmit        POST  globex login 403  403   404   403   403   403   403   403   403
console:evidence                 GET   -     login ok    403   403   403   403   ok    ok    403   403
console:evidence-key             GET   -     ok    ok    ok    ok    ok    ok    ok    ok    ok    ok
console:evidence-download        GET   acme  login ok    404   404   404   404   ok    404   403   403
console:evidence-download        GET   globex login 404  404   404   404   404   404   ok    403   403
console:certificates             GET   -     login ok    ok    ok    ok    ok    ok    ok    403   403
console:certificate-csr          POST  -     login 403   ok    403   403   403   403   403   403   403
console:certificate-import       POST  -     login 403   ok    403   403   403   403   403   403   403
console:connection-api-key       POST  -     login 403   ok    403   403   403   403   403   403   403
console:certificate-detail       GET   acme  login ok    ok    ok    ok    ok    ok    404   403   403
console:certificate-detail       GET   globex login 404  404   404   404   404   404   ok    403   403
console:certificate-csr-download GET   acme  login 403   ok    403   403   403   403   404   403   403
console:certificate-csr-download GET   globex login 404  404   404   404   404   404   403   403   403
console:certificate-signed-upload POST acme  login 403   ok    403   403   403   403   404   403   403
console:certificate-signed-upload POST globex login 404  404   404   404   404   404   403   403   403
console:certificate-activate     POST  acme  login 403   ok    403   403   403   403   404   403   403
console:certificate-activate     POST  globex login 404  404   404   404   404   404   403   403   403
console:certificate-rotate       POST  acme  login 403   ok    403   403   403   403   404   403   403
console:certificate-rotate       POST  globex login 404  404   404   404   404   404   403   403   403
console:certificate-revoke       POST  acme  login 403   ok    403   403   403   403   404   403   403
console:certificate-revoke       POST  globex login 404  404   404   404   404   404   403   403   403
console:settings                 GET   -     login ok    ok    ok    ok    ok    ok    ok    403   403
console:api-key-issue            POST  -     login ok    403   403   403   403   403   ok    403   403
console:second-factor-policy     POST  -     login ok    403   403   403   403   403   ok    403   403
console:member-add               POST  -     login ok    403   403   403   403   403   ok    403   403
console:api-key-revoke           POST  acme  login ok    403   403   403   403   403   404   403   403
console:api-key-revoke           POST  globex login 404  403   403   403   403   403   ok    403   403
console:member-roles             POST  acme  login ok    403   403   403   403   403   404   403   403
console:member-roles             POST  globex login 404  403   403   403   403   403   ok    403   403
console:member-remove            POST  acme  login ok    403   403   403   403   403   404   403   403
console:member-remove            POST  globex login 404  403   403   403   403   403   ok    403   403
console:member-enrolment-link    POST  acme  login ok    403   403   403   403   403   404   403   403
console:member-enrolment-link    POST  globex login 404  403   403   403   403   403   ok    403   403
console:webhook-register         POST  acme  login ok    ok    403   403   403   403   404   403   403
console:webhook-register         POST  globex login 404  404   403   403   403   403   ok    403   403
console:downstream               GET   -     login ok    ok    ok    ok    ok    ok    ok    403   403
console:downstream-add           POST  -     login ok    403   403   403   403   403   ok    403   403
console:downstream-rotate        POST  acme  login ok    403   403   403   403   403   404   403   403
console:downstream-rotate        POST  globex login 404  403   403   403   403   403   ok    403   403
console:downstream-enable        POST  acme  login ok    403   403   403   403   403   404   403   403
console:downstream-enable        POST  globex login 404  403   403   403   403   403   ok    403   403
console:activity                 GET   -     login ok    403   403   403   403   ok    ok    403   403
console:activity-export          GET   -     login ok    403   403   403   403   ok    ok    403   403
console:break-glass-end          POST  acme  login ok    403   403   403   403   403   404   403   403
console:break-glass-end          POST  globex login 404  403   403   403   403   403   ok    403   403
console:reconciliation           GET   -     login ok    ok    ok    ok    ok    ok    ok    403   403
console:reconciliation-run       POST  -     login ok    403   ok    403   403   403   ok    403   403
console:channel-detail           GET   acme  login ok    ok    ok    ok    ok    ok    404   403   403
console:channel-detail           GET   globex login 404  404   404   404   404   404   ok    403   403
console:channel-change-propose   POST  acme  login ok    403   ok    403   403   403   404   403   403
console:channel-change-propose   POST  globex login 404  403   404   403   403   403   ok    403   403
console:channel-change-approve   POST  acme  login 403   403   403   ok    403   403   403   403   403
console:channel-change-approve   POST  globex login 403  403   403   404   403   403   403   403   403
console:channel-change-reject    POST  acme  login ok    403   ok    ok    403   403   404   403   403
console:channel-change-reject    POST  globex login 404  403   404   404   403   403   ok    403   403
console:channel-change-rollback  POST  acme  login ok    403   403   ok    403   403   404   403   403
console:channel-change-rollback  POST  globex login 404  403   403   404   403   403   ok    403   403
console:support                  GET   -     login 404   404   404   404   404   404   404   mfa   ok
# The support pages below read through the support role's own connection, which cannot see this
# module's world (built in a transaction that is rolled back): sup2 finds no such tenant (404).
# tests/console/test_support.py shows verified staff opening each of them on committed data.
console:support-incident         GET   acme  login 404   404   404   404   404   404   404   mfa   404
console:support-incident         GET   globex login 404  404   404   404   404   404   404   mfa   404
console:support-tenant           GET   acme  login 404   404   404   404   404   404   404   mfa   404
console:support-tenant           GET   globex login 404  404   404   404   404   404   404   mfa   404
console:support-message          GET   acme  login 404   404   404   404   404   404   404   mfa   404
console:support-message          POST  acme  login 404   404   404   404   404   404   404   mfa   404
console:support-message          GET   globex login 404  404   404   404   404   404   404   mfa   404
console:support-message          POST  globex login 404  404   404   404   404   404   404   mfa   404
console:support-break-glass      POST  acme  login 404   404   404   404   404   404   404   mfa   404
console:support-break-glass      POST  globex login 404  404   404   404   404   404   404   mfa   404
console:support-break-glass-end  POST  acme  login 404   404   404   404   404   404   404   mfa   404
console:support-break-glass-end  POST  globex login 404  404   404   404   404   404   404   mfa   404
"""

# API personas: anon (no key); session (alice signed in to the console, no key: the API takes
# keys only); acme's UIT keys: read, certs (read + certificates), submit (submit only); prd: acme's
# PRD key (read + certificates); gkey: globex's key (read + certificates); revoked: acme's revoked
# key. Objects are UIT objects of acme or globex, so prd must not reach acme's either.
API_PERSONAS = ("anon", "session", "read", "certs", "submit", "prd", "gkey", "revoked")
API = """
# operationId              object anon session read  certs submit prd   gkey  revoked
identities_list              -      401  401     ok    ok    403    ok    ok    401
channel_retrieve             acme   401  401     ok    ok    403    404   404   401
channel_retrieve             globex 401  401     404   404   403    404   ok    401
channel_changes_list         acme   401  401     ok    ok    403    404   404   401
channel_changes_list         globex 401  401     404   404   403    404   ok    401
reconciliation_results_list  -      401  401     ok    ok    403    ok    ok    401
certificates_list            -      401  401     ok    ok    403    ok    ok    401
certificates_import          -      401  401     403   ok    403    ok    ok    401
certificates_csr             -      401  401     403   ok    403    ok    ok    401
certificates_signed          acme   401  401     403   ok    403    404   404   401
certificates_signed          globex 401  401     403   404   403    404   ok    401
certificates_activate        acme   401  401     403   ok    403    404   404   401
certificates_activate        globex 401  401     403   404   403    404   ok    401
certificates_revoke          acme   401  401     403   ok    403    404   404   401
certificates_revoke          globex 401  401     403   404   403    404   ok    401
certificates_rotate          acme   401  401     403   ok    403    404   404   401
certificates_rotate          globex 401  401     403   404   403    404   ok    401
messages_submit              acme   401  401     403   403   ok     403   403   401
messages_submit              globex 401  401     403   403   404    403   403   401
messages_submit_batch        acme   401  401     403   403   ok     403   403   401
messages_submit_batch        globex 401  401     403   403   404    403   403   401
messages_list                -      401  401     ok    ok    403    ok    ok    401
messages_read                acme   401  401     ok    ok    403    404   404   401
messages_read                globex 401  401     404   404   404    404   ok    401
exceptions_list              -      401  401     ok    ok    403    ok    ok    401
exception_retrieve           acme   401  401     ok    ok    403    404   404   401
exception_retrieve           globex 401  401     404   404   403    404   ok    401
replays_list                 -      401  401     ok    ok    403    ok    ok    401
replay_retrieve              acme   401  401     ok    ok    403    404   404   401
replay_retrieve              globex 401  401     404   404   403    404   ok    401
events_list                  -      401  401     ok    ok    403    ok    ok    401
event_retrieve               acme   401  401     ok    ok    403    ok    404   401
event_retrieve               globex 401  401     404   404   403    404   ok    401
evidence_packs_create        -      401  401     ok    ok    403    ok    ok    401
evidence_packs_retrieve      acme   401  401     ok    ok    403    ok    404   401
evidence_packs_retrieve      globex 401  401     404   404   403    404   ok    401
evidence_packs_download      acme   401  401     ok    ok    403    ok    404   401
evidence_packs_download      globex 401  401     404   404   403    404   ok    401
evidence_key_retrieve        -      ok   ok      ok    ok    ok     ok    ok    ok
"""

# Staff admin has many URLs, all behind the one OTPAdminSite gate (admin:index above proves it
# for every persona); every other admin URL is checked for the callers who must never pass it.
ADMIN_NAMESPACE = "admin"
ADMIN_OUTSIDERS = ("anon", "admin", "sup")


@dataclass(frozen=True)
class Row:
    route: str
    method: str
    owner: str  # "-", "acme" or "globex"
    expected: dict[str, str]


def parse(table: str, personas: tuple[str, ...], *, with_method: bool) -> list[Row]:
    rows = []
    for line in table.strip().splitlines():
        if line.startswith("#"):
            continue
        parts = line.split()
        route, rest = parts[0], parts[1:]
        method = rest.pop(0) if with_method else ""
        owner = rest.pop(0)
        assert len(rest) == len(personas), f"row {line!r} needs one outcome per persona"
        rows.append(Row(route, method, owner, dict(zip(personas, rest, strict=True))))
    return rows


CONSOLE_ROWS = parse(CONSOLE, CONSOLE_PERSONAS, with_method=True)
API_ROWS = parse(API, API_PERSONAS, with_method=False)


# --- what the URLconf and the schema hold ----------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str  # namespaced, e.g. console:home; "" for an unnamed URL
    pattern: str  # as written in the URLconf, e.g. api/v1/channels/<int:channel_id>/
    params: tuple[str, ...]
    namespace: str


def walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = ":".join(filter(None, [namespace, entry.namespace or ""]))
            yield from walk(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            name = ":".join(filter(None, [namespace, entry.name])) if entry.name else ""
            pattern = prefix + str(entry.pattern)
            params = tuple(re.findall(r"<(?:\w+:)?(\w+)>", pattern))
            yield Route(name, pattern, params, namespace)


def url_routes() -> list[Route]:
    return list(walk(get_resolver().url_patterns))


def schema_path(pattern: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", pattern)


def api_operations() -> dict[str, tuple[str, str]]:
    """operationId -> (method, path template) for every operation in the OpenAPI schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {
        operation["operationId"]: (method.upper(), path)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }


def test_every_url_and_operation_has_a_row():
    operations = api_operations()
    api_paths = {path for _, path in operations.values()}
    console_names = {row.route for row in CONSOLE_ROWS}
    routes = url_routes()
    missing = sorted(
        f"{route.name or '(unnamed)'} /{route.pattern}"
        for route in routes
        if route.namespace != ADMIN_NAMESPACE
        and route.name not in console_names
        and schema_path(route.pattern) not in api_paths
    )
    assert not missing, (
        "URLs with no row in the authorisation matrix (add one to CONSOLE, or document the "
        f"operation in the OpenAPI schema and add it to API): {missing}"
    )
    named = {route.name for route in routes}
    assert not sorted(console_names - named), "CONSOLE rows for URLs that no longer exist"
    assert set(operations) == {row.route for row in API_ROWS}, (
        "API rows must match the schema's operations one to one: "
        f"missing {sorted(set(operations) - {r.route for r in API_ROWS})}, "
        f"stale {sorted({r.route for r in API_ROWS} - set(operations))}"
    )
    for rows, params_of in (
        (CONSOLE_ROWS, {r.name: r.params for r in routes}),
        (API_ROWS, {op: tuple(re.findall(r"{(\w+)}", p)) for op, (_, p) in operations.items()}),
    ):
        for row in rows:
            needs_object = bool(params_of[row.route])
            owners = {r.owner for r in rows if (r.route, r.method) == (row.route, row.method)}
            expected = {"acme", "globex"} if needs_object else {"-"}
            assert owners == expected, f"{row.route} {row.method}: rows for {sorted(owners)}"


# --- the shared set-up -------------------------------------------------------------------------


@dataclass
class Matrix:
    users: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)
    device_ids: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    objects: dict[tuple[str, str], Any] = field(default_factory=dict)  # (param, owner) -> id
    # (route, param, owner) -> value, where two routes share a parameter's name (token)
    route_objects: dict[tuple[str, str, str], Any] = field(default_factory=dict)


ROLE_OF = {
    "admin": Role.TENANT_ADMIN,
    "cert": Role.CERTIFICATE_ADMIN,
    "oper": Role.MESSAGE_OPERATOR,
    "appr": Role.APPROVER,
    "view": Role.VIEWER,
    "audit": Role.AUDITOR,
}


def staged_certificate(ca: TestCA, connection: Connection) -> str:
    key = new_key()
    imported = certificates.import_certificate(
        connection=connection,
        purpose="signing",
        data=pem(ca.issue(key.public_key())) + key_pem(key),
        actor="matrix",
    )
    return str(imported.id)


def tenant_objects(matrix: Matrix, owner: str, *, invitee: Any, enrollee: Any, victim: Any) -> None:
    """The objects the later branches' URLs name, in the current tenant: a stored message, an
    event, a ready evidence pack, a downstream endpoint, an invitation (to ``invitee``, someone
    outside this tenant), an enrolment link (for ``enrollee``) and a set-password link."""
    connection = Connection.objects.get()
    matrix.objects["connection_id", owner] = connection.id
    body = b'[{"payload": {}}]'
    stored = store.store_inbound_delivery(
        tenant_id=connection.tenant_id,
        connection_id=connection.id,
        channel_id=None,
        body=body,
        headers={},
        messages=[
            store.InboundMessageFacts(
                offset=1, length=len(body) - 2, sha256=b"\x00" * 32, interface_id="IF-021"
            )
        ],
    )
    matrix.objects["message_id", owner] = stored.message_ids[0]
    # An exception on that message and a production-style replay request waiting for approval.
    raise_exceptions(
        specs=[
            ExceptionSpec(
                code="CTX-ENVIRONMENT",
                title="matrix",
                category="market_operations",
                message_id=stored.message_ids[0],
                connection_id=connection.id,
            )
        ]
    )
    matrix.objects["exception_id", owner] = MessageException.objects.get().id
    matrix.objects["replay_id", owner] = Replay.objects.create(
        kind="inbound",
        connection=connection,
        production=True,
        reason_code="other",
        reason_text="matrix",
        message_ids=stored.message_ids,
        requested_by="matrix",
    ).id
    # The outbound pages name an outbound message (an inbound id would be a 404 for everyone).
    _, (outbound_id,) = store.store_outbound_messages(
        tenant_id=connection.tenant_id,
        connection_id=connection.id,
        channel_id=None,
        source_body=b"{}",
        headers={},
        messages=[store.OutboundMessageFacts(interface_id="IF-021")],
    )
    for route in ("console:outbound-detail", "console:outbound-resubmit"):
        matrix.route_objects[route, "message_id", owner] = outbound_id
    event = events.publish_event(
        tenant_id=connection.tenant_id, type="outbound.state_changed", payload={"to": "sent"}
    )
    matrix.objects["event_id", owner] = Event.objects.get(id=event).webhook_id
    pack = EvidencePack.objects.create(
        requested_by="matrix",
        period_from=timezone.now() - timedelta(days=1),
        period_to=timezone.now(),
        state=PackState.READY,
        file_name=f"matrix-{owner}.zip",
    )
    path = packs.pack_path(pack)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    matrix.objects["pack_id", owner] = pack.id
    endpoint = downstream.create_endpoint(
        name=f"matrix-{owner}", url="https://93.184.216.34/hooks", event_types=["*"], actor="matrix"
    ).endpoint
    matrix.objects["endpoint_id", owner] = endpoint.id
    invitation = services.invite_member(
        username=invitee.username, email="i@example.com", roles=["viewer"], actor="matrix"
    )
    matrix.objects["invitation_id", owner] = invitation.id
    token = f"matrix-enrolment-{owner}"
    EnrolmentLink.objects.create(
        user=enrollee,
        token_hash=hash_token(token),
        issued_by="matrix",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    matrix.objects["tenant_id", owner] = connection.tenant_id
    matrix.objects["slug", owner] = owner
    matrix.objects["key", owner] = f"tenant-{owner}"
    matrix.objects["grant_id", owner] = BreakGlassGrant.objects.create(
        staff_user=victim,
        staff_username=victim.username,
        reason="matrix incident",
        granted_at=timezone.now(),
        expires_at=timezone.now() + timedelta(hours=1),
    ).id
    # A change to the tenant's channel awaiting approval, as on a production connection.
    channel = Channel.objects.get()
    matrix.objects["change_id", owner] = ChannelChange.objects.create(
        channel=channel,
        before={"status": channel.status},
        after={"status": "live"},
        reason="matrix",
        requires_approval=True,
        proposed_by_name="matrix",
    ).id
    matrix.route_objects["console:mfa-enrol", "token", owner] = token
    matrix.objects["uidb64", owner] = urlsafe_base64_encode(force_bytes(victim.pk))
    matrix.route_objects["console:set-password", "token", owner] = (
        default_token_generator.make_token(victim)
    )


def build_matrix() -> Matrix:
    world = build_world()
    matrix = Matrix()
    ca = TestCA.create()
    with tenant_context(world.acme.id):
        for persona, role in ROLE_OF.items():
            matrix.users[persona] = services.create_user(
                username=f"matrix-{persona}",
                email=f"{persona}@acme.example",
                password="matrix-persona-password",
                roles=[role],
            )
        victim = services.create_user(
            username="matrix-victim-acme",
            email="v@acme.example",
            password="x" * 16,
            roles=["viewer"],
        )
        matrix.objects["membership_id", "acme"] = Membership.objects.get(user=victim).id
        matrix.objects["certificate_id", "acme"] = staged_certificate(ca, Connection.objects.get())
        matrix.objects["channel_id", "acme"] = Channel.objects.get().id
        for persona, scopes, environment in [
            ("read", ["read"], "UIT"),
            ("certs", ["read", "certificates"], "UIT"),
            ("submit", ["submit"], "UIT"),
            ("prd", ["read", "certificates"], "PRD"),
            ("revoked", ["read", "certificates"], "UIT"),
        ]:
            issued = services.issue_api_credential(
                name=persona, scopes=scopes, environment=environment
            )
            matrix.keys[persona] = issued.key
        revoked = ApiCredential.objects.get(name="revoked")
        services.revoke_api_credential(credential=revoked, actor="matrix")
        matrix.objects["credential_id", "acme"] = ApiCredential.objects.get(name="read").id
        tenant_objects(
            matrix,
            "acme",
            invitee=world.charlie.user,
            enrollee=matrix.users["view"],
            victim=victim,
        )
    with tenant_context(world.globex.id):
        matrix.users["glbx"] = world.charlie.user
        victim = services.create_user(
            username="matrix-victim-globex",
            email="v@globex.example",
            password="x" * 16,
            roles=["viewer"],
        )
        matrix.objects["membership_id", "globex"] = Membership.objects.get(user=victim).id
        matrix.objects["certificate_id", "globex"] = staged_certificate(
            ca, Connection.objects.get()
        )
        matrix.objects["channel_id", "globex"] = Channel.objects.get().id
        issued = services.issue_api_credential(
            name="gkey", scopes=["read", "certificates"], environment="UIT"
        )
        matrix.keys["gkey"] = issued.key
        matrix.objects["credential_id", "globex"] = issued.credential.id
        tenant_objects(
            matrix,
            "globex",
            invitee=matrix.users["admin"],
            enrollee=world.charlie.user,
            victim=victim,
        )
    support = Group.objects.get_or_create(name=StaffRole.PROVIDER_SUPPORT)[0]
    for persona in ("sup", "sup2"):
        staff = get_user_model().objects.create_user(
            f"matrix-{persona}", password="matrix-persona-password", is_staff=True
        )
        staff.groups.add(support)
        matrix.users[persona] = staff
    device = TOTPSecondFactor.new_for(matrix.users["sup2"])
    device.confirmed = True
    device.save()
    matrix.device_ids["sup2"] = device.persistent_id
    matrix.users["session"] = world.alice.user
    open_sessions(matrix)
    return matrix


@pytest.fixture(scope="module")
def matrix(django_db_setup: None, django_db_blocker: Any) -> Iterator[Matrix]:
    """Built once, inside a transaction that is rolled back when the module ends."""
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            yield build_matrix()
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


@pytest.fixture
def cell(matrix: Matrix, django_db_blocker: Any) -> Iterator[Matrix]:
    """One call's savepoint: whatever the call changes is undone before the next."""
    with django_db_blocker.unblock(), transaction.atomic():
        try:
            yield matrix
        finally:
            transaction.set_rollback(True)


def client_for(matrix: Matrix, persona: str) -> Client:
    """A fresh client carrying the persona's session cookie (sessions are made once, in the
    module's set-up, so a cell that signs out or switches tenant changes no other cell)."""
    client = Client()
    session_key = matrix.sessions.get(persona)
    if session_key is not None:
        client.cookies[settings.SESSION_COOKIE_NAME] = session_key
    return client


def api_client_for(matrix: Matrix, persona: str) -> Client:
    client = client_for(matrix, persona) if persona == "session" else Client()
    key = matrix.keys.get(persona)
    if key is not None:
        client.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {key}"
    return client


def open_sessions(matrix: Matrix) -> None:
    for persona, user in matrix.users.items():
        client = Client()
        client.force_login(user)
        if persona in matrix.device_ids:
            session = client.session
            session[DEVICE_ID_SESSION_KEY] = matrix.device_ids[persona]
            session.save()
        matrix.sessions[persona] = client.cookies[settings.SESSION_COOKIE_NAME].value


def outcome(response: Any) -> str:
    status = response.status_code
    assert status < 500, f"server error {status}"
    if status in (401, 403, 404):
        return str(status)
    if status in (301, 302, 303):
        location = response["Location"].split("?")[0]
        if location in (reverse("console:login"), reverse("admin:login")):
            return "login"
        if location == reverse("console:account-mfa"):
            return "mfa"
    assert status < 300 or status in (301, 302, 303, 400, 429), f"unexpected status {status}"
    return "ok"


def object_kwargs(
    matrix: Matrix, route: str, params: tuple[str, ...], owner: str
) -> dict[str, Any]:
    return {
        param: matrix.route_objects.get((route, param, owner), matrix.objects.get((param, owner)))
        for param in params
    }


ROUTE_PARAMS = {route.name: route.params for route in url_routes()}


@pytest.mark.parametrize(
    ("row", "persona"),
    [(row, persona) for row in CONSOLE_ROWS for persona in CONSOLE_PERSONAS],
    ids=lambda value: (
        value if isinstance(value, str) else f"{value.method}-{value.route}-{value.owner}"
    ),
)
def test_console(cell: Matrix, row: Row, persona: str):
    url = reverse(
        row.route, kwargs=object_kwargs(cell, row.route, ROUTE_PARAMS[row.route], row.owner)
    )
    client = client_for(cell, persona)
    response = client.get(url) if row.method == "GET" else client.post(url, {})
    assert outcome(response) == row.expected[persona], (row.method, url, persona)


OPERATIONS = api_operations()


@pytest.mark.parametrize(
    ("row", "persona"),
    [(row, persona) for row in API_ROWS for persona in API_PERSONAS],
    ids=lambda value: value if isinstance(value, str) else f"{value.route}-{value.owner}",
)
def test_api(cell: Matrix, row: Row, persona: str):
    method, template = OPERATIONS[row.route]
    params = tuple(re.findall(r"{(\w+)}", template))
    url = template.format(**object_kwargs(cell, row.route, params, row.owner))
    client = api_client_for(cell, persona)
    if method == "GET":
        response = client.get(url)
    else:
        response = client.generic(method, url, "{}", content_type="application/json")
    assert outcome(response) == row.expected[persona], (method, url, persona)


def test_admin_urls_keep_outsiders_out(cell: Matrix):
    """Every staff admin URL refuses the callers who must never pass its gate."""
    routes = [r for r in url_routes() if r.namespace == ADMIN_NAMESPACE and r.name]
    assert len(routes) > 10
    refused = {"login", "404"}
    for persona in ADMIN_OUTSIDERS:
        client = client_for(cell, persona)
        for route in routes:
            if route.name in ("admin:login", "admin:logout"):  # open to all by design
                continue
            kwargs = dict.fromkeys(route.params, "1")
            if "app_label" in kwargs:
                kwargs["app_label"] = "tenants"
            url = reverse(route.name, kwargs=kwargs)
            got = outcome(client.get(url))
            assert got in refused, (persona, route.name, got)
