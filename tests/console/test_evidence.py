"""The console's Evidence area: who may request packs, the request (post, redirect, get), the
progress fragment, the audited download, and the published key."""

from __future__ import annotations

import zipfile
from io import BytesIO

import pytest
from django.core.cache import cache
from django.test import Client

from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.evidence import keys, packs
from messaging.models import EvidencePack
from tenants import services
from tenants.models import Role
from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


def signed_in(username: str) -> Client:
    client = Client()
    response = client.post("/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


@pytest.fixture
def audrey(world):
    with tenant_context(world.acme.id):
        services.create_user(
            username="audrey", email="audrey@acme.example", password=PASSWORD, roles=[Role.AUDITOR]
        )
    return signed_in("audrey")


def test_an_auditor_requests_a_pack_and_downloads_it_once_built(world, audrey, settings):
    settings.BUSBAR_EVIDENCE_SETTLE_SECONDS = 0
    response = audrey.post(
        "/evidence/",
        {"period_from": "2026-01-01", "period_to": "2026-12-31", "interfaces": "if-021"},
    )
    assert response.status_code == 302  # post, redirect, get: a reload requests nothing twice
    with tenant_context(world.acme.id):
        pack = EvidencePack.objects.get()
    assert pack.requested_by == "audrey"
    assert pack.interfaces == ["IF-021"]
    assert pack.state == "queued"
    fragment = audrey.get("/evidence/", headers={"HX-Request": "true"}).content.decode()
    assert 'hx-trigger="every 2s"' in fragment  # the table polls while a pack is being built
    assert "<progress" in fragment
    packs.generate_pack(tenant_id=world.acme.id, pack_id=pack.id)
    page = audrey.get(response["Location"]).content.decode()
    assert "every 2s" not in page
    assert f"/evidence/{pack.id}/download/" in page
    download = audrey.get(f"/evidence/{pack.id}/download/")
    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    with zipfile.ZipFile(BytesIO(body)) as z:
        assert {"manifest.json", "manifest.sig", "verify.py"} <= set(z.namelist())
    with tenant_context(world.acme.id):
        actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"evidence.pack_requested", "evidence.pack_generated", "evidence.pack_downloaded"} <= (
        actions
    )


def test_a_bad_request_names_the_problem_and_stores_nothing(world, audrey):
    page = audrey.post(
        "/evidence/",
        {"period_from": "2026-05-02", "period_to": "2026-05-01", "interfaces": "IF-021, nonsense"},
    ).content.decode()
    assert "the period ends before it starts" in page
    assert "not an interface id: NONSENSE" in page
    with tenant_context(world.acme.id):
        assert not EvidencePack.objects.exists()


def test_roles_without_evidence_rights_are_refused(world):
    assert signed_in("bob").get("/evidence/").status_code == 403  # message operator


def test_payloads_stay_out_of_a_tenant_admins_pack(world, settings):
    settings.BUSBAR_EVIDENCE_SETTLE_SECONDS = 0
    alice = signed_in("alice")  # tenant admin: evidence yes, content no
    assert "your role has no content rights" in alice.get("/evidence/").content.decode()
    alice.post(
        "/evidence/",
        {"period_from": "2026-01-01", "period_to": "2026-01-02", "include_payloads": "on"},
    )
    with tenant_context(world.acme.id):
        assert EvidencePack.objects.get().include_payloads is False


def test_another_tenant_cannot_download_acmes_pack(world, audrey):
    with tenant_context(world.acme.id):
        pack = EvidencePack.objects.create(
            requested_by="audrey",
            period_from="2026-01-01T00:00Z",
            period_to="2026-01-02T00:00Z",
            state="ready",
        )
    assert signed_in("charlie").get(f"/evidence/{pack.id}/download/").status_code == 404


def test_the_evidence_key_is_published_for_anyone(db):
    page = Client().get("/evidence/key/")
    assert page.status_code == 200
    assert keys.key_id() in page.content.decode()
    pem = Client().get("/evidence/key/?format=pem")
    assert pem.content == keys.public_key_pem()
