"""The certificates page: admins act, other members see status, other tenants see nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from core.models import AuditEvent
from core.tenancy import tenant_context
from tenants import certificates, services
from tenants.models import Certificate, Connection
from tests.conftest import PASSWORD
from tests.pki import TestCA, key_pem, new_key, p12, pem
from tests.redis_keys import purge_queue, queue_length


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


def signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


@pytest.fixture
def acme_connection(world) -> Connection:
    with tenant_context(world.acme.id):
        return Connection.objects.get()


def test_a_certificate_admin_imports_a_pkcs12_and_sees_it_at_a_glance(world, ca, acme_connection):
    key = new_key()
    bundle = p12(key, ca.issue(key.public_key(), days=30), "pfx-pass")
    alice = signed_in("alice")
    response = alice.post(
        "/certificates/import/",
        {
            "connection": acme_connection.id,
            "purpose": "mtls",
            "password": "pfx-pass",
            "bundle": SimpleUploadedFile("acme.p12", bundle),
            "label": "UIT mTLS",
        },
    )
    assert response.status_code == 302
    page = alice.get(response["Location"]).content.decode()
    assert "Imported; it is staged" in page
    assert "CN=dip.acme.example" in page
    listing = alice.get("/certificates/").content.decode()
    assert "expiry-warning" in listing  # 30 days left shows amber
    with tenant_context(world.acme.id):
        assert AuditEvent.objects.filter(action="certificate.imported").count() == 1


def test_a_wrong_pkcs12_password_is_named_and_nothing_is_stored(world, ca, acme_connection):
    key = new_key()
    response = signed_in("alice").post(
        "/certificates/import/",
        {
            "connection": acme_connection.id,
            "purpose": "mtls",
            "password": "guess",
            "bundle": SimpleUploadedFile("acme.p12", p12(key, ca.issue(key.public_key()), "right")),
        },
        follow=True,
    )
    assert "wrong password, or not a PKCS#12 file" in response.content.decode()
    with tenant_context(world.acme.id):
        assert not Certificate.objects.exists()


def test_a_csr_is_generated_downloaded_and_completed(world, ca, acme_connection, settings):
    settings.BUSBAR_DEMO_DIPSIM_CA = "/srv/demo/dipsim-ca"
    alice = signed_in("alice")
    response = alice.post(
        "/certificates/csr/",
        {
            "connection": acme_connection.id,
            "purpose": "signing",
            "common_name": "sign.acme.example",
            "organization": "Acme Energy",
            "country": "GB",
            "key_size": 2048,
        },
    )
    detail = response["Location"]
    certificate_id = detail.rstrip("/").rsplit("/", 1)[1]
    csr = alice.get(f"/certificates/{certificate_id}/csr.pem")
    assert csr["Content-Type"] == "application/pkcs10"
    assert b"BEGIN CERTIFICATE REQUEST" in csr.content
    # In the demo, the page says how to get it signed by dipsim's CA, for this DIP ID and use.
    waiting = alice.get(detail).content.decode()
    assert 'data-testid="demo-ca"' in waiting
    assert "dipsim ca sign --dir /srv/demo/dipsim-ca" in waiting
    assert "--kind signing --dip-id 1000000001" in waiting
    from cryptography import x509

    signed = ca.issue(
        x509.load_pem_x509_csr(csr.content).public_key(), common_name="sign.acme.example"
    )
    alice.post(
        f"/certificates/{certificate_id}/signed/",
        {"certificate": SimpleUploadedFile("signed.pem", pem(signed))},
    )
    alice.post(f"/certificates/{certificate_id}/activate/")
    page = alice.get(detail).content.decode()
    assert "status-active" in page
    assert 'data-testid="demo-ca"' not in page  # only while a signed certificate is awaited


def test_other_roles_see_status_only_and_cannot_act(world, ca, acme_connection):
    with tenant_context(world.acme.id):
        key = new_key()
        certificate = certificates.import_certificate(
            connection=acme_connection,
            purpose="signing",
            data=pem(ca.issue(key.public_key())) + key_pem(key),
            actor="alice",
        )
    bob = signed_in("bob")
    listing = bob.get("/certificates/").content.decode()
    assert "staged" in listing
    assert certificate.fingerprint_sha256[:16] not in listing
    assert "Generate a key and CSR" not in listing
    for action in ("activate/", "revoke/"):
        assert (
            bob.post(f"/certificates/{certificate.id}/{action}", {"reason": "x"}).status_code == 403
        )
    assert bob.get(f"/certificates/{certificate.id}/csr.pem").status_code == 403
    with tenant_context(world.acme.id):
        certificate.refresh_from_db()
    assert certificate.status == "staged"


def test_charlie_gets_a_404_for_acmes_certificate(world, ca, acme_connection):
    with tenant_context(world.acme.id):
        key = new_key()
        certificate = certificates.import_certificate(
            connection=acme_connection,
            purpose="signing",
            data=pem(ca.issue(key.public_key())) + key_pem(key),
            actor="alice",
        )
    charlie = signed_in("charlie")
    assert charlie.get(f"/certificates/{certificate.id}/").status_code == 404
    assert (
        charlie.post(f"/certificates/{certificate.id}/revoke/", {"reason": "x"}).status_code == 404
    )
    assert "dip.acme.example" not in charlie.get("/certificates/").content.decode()
    # Even as globex's certificate admin, charlie cannot import into acme's connection: it is not
    # among his choices.
    with tenant_context(world.globex.id):
        services.add_member(user=world.charlie.user, roles=["tenant_admin", "certificate_admin"])
    response = charlie.post(
        "/certificates/import/",
        {
            "connection": acme_connection.id,
            "purpose": "trust_anchor",
            "bundle": SimpleUploadedFile("ca.pem", pem(ca.cert)),
        },
        follow=True,
    )
    assert "Select a valid choice" in response.content.decode()


def test_no_private_key_reaches_any_page(world, ca, acme_connection):
    key = new_key()
    with tenant_context(world.acme.id):
        certificate = certificates.import_certificate(
            connection=acme_connection,
            purpose="signing",
            data=pem(ca.issue(key.public_key(), not_after=datetime.now(UTC) + timedelta(days=5)))
            + key_pem(key),
            actor="alice",
        )
        certificates.activate_first_certificate(certificate=certificate, actor="alice")
        certificates.check_certificate_expiry()
    alice = signed_in("alice")
    pages = [
        alice.get(path).content.decode()
        for path in ("/certificates/", f"/certificates/{certificate.id}/", "/settings/", "/")
    ]
    secret_body = "".join(key_pem(key).decode().splitlines()[1:3])
    for page in pages:
        assert "PRIVATE KEY" not in page
        assert secret_body not in page
        assert not re.search(r"v1\.\w+\.[\w-]{20,}", page)  # nor the ciphertext
    assert "expires in 4 days" in pages[0]  # the notice, for the certificate admin...
    overview_notices = pages[3].split('data-testid="notices"')[1].split("</section>")[0]
    assert "expires in 4 days" in overview_notices  # ...on the overview too
    # The notice is not his role's. (The flow's health may still say the certificate nears its
    # end: that is the flow's state, which every member sees.)
    bobs_overview = signed_in("bob").get("/").content.decode()
    assert 'data-testid="notices"' not in bobs_overview


def test_rotate_queues_a_canary_for_a_worker_and_records_the_request(
    world, ca, acme_connection, django_capture_on_commit_callbacks
):

    with tenant_context(world.acme.id):
        key = new_key()
        staged = certificates.import_certificate(
            connection=acme_connection,
            purpose="signing",
            data=pem(ca.issue(key.public_key())) + key_pem(key),
            actor="alice",
        )
    purge_queue("maintenance")
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in("alice").post(f"/certificates/{staged.id}/rotate/", follow=True)
    assert "Rotation queued" in response.content.decode()
    assert queue_length("maintenance") == 1  # the canary never runs inside the web request
    purge_queue("maintenance")
    with tenant_context(world.acme.id):
        assert AuditEvent.objects.filter(action="certificate.rotation_requested").count() == 1

    # While it waits for its worker, the page says so and offers no second rotation...
    alice = signed_in("alice")
    page = alice.get(f"/certificates/{staged.id}/").content.decode()
    assert 'data-testid="rotation-queued"' in page
    assert f"/certificates/{staged.id}/rotate/" not in page
    assert f"/certificates/{staged.id}/activate/" not in page
    # ...and the server refuses one anyway, naming why, with nothing queued.
    with django_capture_on_commit_callbacks(execute=True):
        again = alice.post(f"/certificates/{staged.id}/rotate/", follow=True).content.decode()
    assert "is waiting for its canary" in again
    assert queue_length("maintenance") == 0
    with tenant_context(world.acme.id):
        assert AuditEvent.objects.filter(action="certificate.rotation_requested").count() == 1

    # The canary's result ends the wait: a failed one is shown, and rotating is offered again.
    with tenant_context(world.acme.id):
        Certificate.objects.filter(id=staged.id).update(
            last_canary_at=datetime.now(UTC),
            last_canary_ok=False,
            last_canary_detail="401 Unauthorized",
        )
    page = alice.get(f"/certificates/{staged.id}/").content.decode()
    assert 'data-testid="rotation-queued"' not in page
    assert "The last canary failed (401 Unauthorized)" in page


def test_a_staged_certificate_offers_the_one_way_in_that_applies(world, ca, acme_connection):
    """No active certificate of the purpose: activate. One active: rotate, with a canary. After
    the rotation, the new certificate names the one it replaced and when that one's overlap ends."""
    with tenant_context(world.acme.id):
        first = certificates.import_certificate(
            connection=acme_connection,
            purpose="signing",
            data=pem(ca.issue((key := new_key()).public_key())) + key_pem(key),
            actor="alice",
        )
    alice = signed_in("alice")
    page = alice.get(f"/certificates/{first.id}/").content.decode()
    assert f"/certificates/{first.id}/activate/" in page
    assert f"/certificates/{first.id}/rotate/" not in page
    alice.post(f"/certificates/{first.id}/activate/")
    with tenant_context(world.acme.id):
        second = certificates.import_certificate(
            connection=acme_connection,
            purpose="signing",
            data=pem(ca.issue((key := new_key()).public_key())) + key_pem(key),
            actor="alice",
        )
    page = alice.get(f"/certificates/{second.id}/").content.decode()
    assert f"/certificates/{second.id}/rotate/" in page
    assert f"/certificates/{second.id}/activate/" not in page
    assert "goes in by rotation" in page

    with tenant_context(world.acme.id):
        certificates.rotate_certificate(
            certificate=second,
            canary=lambda _: certificates.CanaryResult(ok=True, detail="201 Created"),
            actor="alice",
        )
        overlap_until = Certificate.objects.get(id=first.id).overlap_until
    stamp = f"{overlap_until:%Y-%m-%d %H:%M} UTC"
    new_page = signed_in("bob").get(f"/certificates/{second.id}/").content.decode()
    assert 'data-testid="replaced"' in new_page  # shown to every member, not only admins
    assert stamp in new_page
    old_page = alice.get(f"/certificates/{first.id}/").content.decode()
    assert 'data-testid="overlap-until"' in old_page
    assert stamp in old_page


def test_a_message_reference_finds_the_certificate_that_signed_it_and_revocation_counts_them(
    world, ca, acme_connection
):
    from django.utils import timezone

    from messaging.models import DipExchange

    with tenant_context(world.acme.id):
        key = new_key()
        certificate = certificates.activate_first_certificate(
            certificate=certificates.import_certificate(
                connection=acme_connection,
                purpose="signing",
                data=pem(ca.issue(key.public_key())) + key_pem(key),
                actor="alice",
            ),
            actor="alice",
        )
        DipExchange.objects.create(
            connection=acme_connection,
            operation="submit",
            interface_id="IF-031",
            method="POST",
            url="https://dip.example/dip-channel/IF-031",
            started_at=timezone.now(),
            http_status=201,
            outcome="accepted",
            body_sha256="f" * 64,
            signing_certificate_fingerprint=certificate.fingerprint_sha256,
            mtls_certificate_fingerprint="c" * 64,
            sender_references=[
                "S-IF-031-1000000001-SUP-20261127-1",
                "S-IF-031-1000000001-SUP-20261127-2",
            ],
            transaction_ids=["T-IF-031-1", "T-IF-031-2"],
        )
    alice = signed_in("alice")
    found = alice.get("/certificates/", {"message": "T-IF-031-2"}).content.decode()
    assert certificate.fingerprint_sha256 in found
    charlie = signed_in("charlie")
    assert (
        "No request to the DIP carried"
        in charlie.get("/certificates/", {"message": "T-IF-031-2"}).content.decode()
    )
    revoked = alice.post(
        f"/certificates/{certificate.id}/revoke/", {"reason": "key compromise"}, follow=True
    ).content.decode()
    assert "2 messages went to the DIP under it" in revoked
    assert 'id="exchanges"' in revoked


def test_the_dip_api_key_is_part_of_the_credential_set_and_replaced_without_being_shown(
    world, acme_connection
):
    alice = signed_in("alice")
    page = alice.get("/certificates/").content.decode()
    assert "stored encrypted, ends …-123" in page
    response = alice.post(
        "/certificates/api-key/",
        {"connection": acme_connection.id, "api_key": "new-dip-key-7890"},
        follow=True,
    )
    page = response.content.decode()
    assert "ends …7890" in page
    assert "new-dip-key-7890" not in page
    with tenant_context(world.acme.id):
        from tenants.services import get_connection_api_key

        acme_connection.refresh_from_db()
        assert get_connection_api_key(connection=acme_connection) == "new-dip-key-7890"
        event = AuditEvent.objects.get(action="connection.updated")
        assert "new-dip-key" not in str(event.detail)
    assert (
        signed_in("bob")
        .post(
            "/certificates/api-key/",
            {"connection": acme_connection.id, "api_key": "bob-was-here-1"},
        )
        .status_code
        == 403
    )
