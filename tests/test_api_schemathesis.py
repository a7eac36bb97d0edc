"""schemathesis against the published OpenAPI schema, with two tenants' keys.

For every operation, Hypothesis generates requests from the schema (valid and invalid bodies,
odd path and query values) and sends each through the real WSGI application and database with
acme's key and with globex's. No answer may be a 5xx, and no answer to one tenant may name the
other's objects: slug, tenant id, MPID, DIP ID, certificate ids and fingerprints. Each operation
that takes an object id is also sent the other tenant's real ids, which must look missing.

Bounded so it suits every run of the suite: a few examples per operation, no deadline (the
machine is shared), no shrinking database state between examples (one test transaction per
operation).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from core.tenancy import tenant_context
from tenants import certificates, services
from tenants.models import Channel, Connection
from tests.conftest import build_world
from tests.pki import TestCA, key_pem, new_key, pem

# The schema as served, generated in-process (no request, no database).
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
APPLICATION = WSGIHandler()
EXAMPLES_PER_OPERATION = 8


@dataclass
class Tenant:
    key: str
    ids: dict[str, str]  # path parameter -> one real object id of this tenant
    needles: list[str]  # strings that name this tenant's objects and nothing else


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture
def tenants(db: None, ca: TestCA) -> dict[str, Tenant]:
    world = build_world()
    found = {}
    for slug, tenant in (("acme", world.acme), ("globex", world.globex)):
        with tenant_context(tenant.id):
            connection = Connection.objects.select_related("identity").get()
            key = new_key()
            certificate = certificates.import_certificate(
                connection=connection,
                purpose="signing",
                data=pem(ca.issue(key.public_key(), common_name=f"dip.{slug}.example"))
                + key_pem(key),
                actor="schemathesis",
            )
            issued = services.issue_api_credential(
                name="fuzz", scopes=["read", "submit", "certificates"], environment="UIT"
            )
            found[slug] = Tenant(
                key=issued.key,
                ids={
                    "certificate_id": str(certificate.id),
                    "channel_id": str(Channel.objects.get().id),
                },
                needles=[
                    slug,
                    str(tenant.id),
                    connection.identity.mpid,
                    connection.identity.dip_id,
                    str(certificate.id),
                    certificate.fingerprint_sha256,
                ],
            )
    return found


@pytest.fixture
def in_process_wsgi() -> Iterator[None]:
    """Requests run inside the test's transaction, as Django's own test client arranges: the
    request signals must not close the connection that holds it."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def assert_names_nothing_of(response: Any, other: Tenant, *, caller: str) -> None:
    text = response.text
    for needle in other.needles:
        assert not re.search(rf"(?<![\w-]){re.escape(needle)}(?![\w-])", text, re.IGNORECASE), (
            f"an answer to {caller} names another tenant's {needle!r}: {text[:500]}"
        )


CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_no_other_tenants_data(
    case: Any, tenants: dict[str, Tenant], in_process_wsgi: None
) -> None:
    for caller, other in (("acme", "globex"), ("globex", "acme")):
        headers = {"X-API-Key": tenants[caller].key}
        response = case.call(app=APPLICATION, headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        assert_names_nothing_of(response, tenants[other], caller=caller)
        if case.path_parameters:
            # The other tenant's real objects, by id: hidden exactly like missing ones.
            original = dict(case.path_parameters)
            case.path_parameters = {
                name: tenants[other].ids.get(name, value) for name, value in original.items()
            }
            try:
                response = case.call(app=APPLICATION, headers=headers)
            finally:
                case.path_parameters = original
            # Never served: 404 for a well-formed call, or refused earlier for a malformed one
            # (schemathesis also drops the key or swaps the method on purpose).
            assert response.status_code in (400, 401, 403, 404, 405), response.text[:300]
            assert_names_nothing_of(response, tenants[other], caller=caller)
