"""Provider support's page: every tenant's metadata at a glance, only for verified staff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY

from core.models import TOTPSecondFactor
from core.tenancy import tenant_context
from messaging import support as cross_tenant
from messaging.models import BreakGlassGrant
from messaging.outbound import breaker
from tenants import certificates
from tenants.models import Certificate, Connection
from tests.conftest import PASSWORD, build_world
from tests.messaging.test_break_glass import store_message
from tests.pki import TestCA, key_pem, new_key, pem


def staff_client(*, verified: bool) -> Client:
    sam = get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
    sam.groups.add(Group.objects.get_or_create(name="provider_support")[0])
    client = Client()
    client.force_login(sam)
    if verified:
        device = TOTPSecondFactor.new_for(sam)
        device.confirmed = True
        device.save()
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return client


def test_support_sees_every_tenants_health_and_security_events(committed_db):
    world = build_world()
    ca = TestCA.create()
    key = new_key()
    now = datetime.now(UTC)
    with tenant_context(world.acme.id):
        staged = certificates.import_certificate(
            connection=Connection.objects.get(),
            purpose="signing",
            data=pem(
                ca.issue(
                    key.public_key(),
                    not_before=now - timedelta(days=1),
                    not_after=now + timedelta(days=9),
                )
            )
            + key_pem(key),
            actor="pytest",
        )
        certificates.activate_first_certificate(certificate=staged, actor="pytest")
    Client().post("/login/", {"username": "charlie", "password": "wrong"})
    page = staff_client(verified=True).get("/support/").content.decode()
    assert "Acme Energy Supply" in page
    assert "Globex Smart Data" in page
    assert "expiry-critical" in page  # acme's key expires in 9 days
    assert "login.failed" in page
    assert '<span class="error">1</span>' in page  # globex's failed sign-in, counted
    assert "acme-dip-api-key" not in page


def test_support_needs_a_verified_second_factor(committed_db):
    build_world()
    response = staff_client(verified=False).get("/support/")
    assert response.status_code == 302
    assert response["Location"] == "/account/second-factor/?for=support"


def test_the_second_factor_page_says_why_support_sent_them(committed_db):
    build_world()
    page = staff_client(verified=False).get("/account/second-factor/?for=support")
    text = page.content.decode()
    assert 'data-testid="support-needs-mfa"' in text
    assert "Support pages need a verified second factor" in text


def test_tenant_users_cannot_find_the_support_page(committed_db):
    build_world()
    alice = Client()
    alice.post("/login/", {"username": "alice", "password": PASSWORD})
    assert alice.get("/support/").status_code == 404


def test_staff_land_on_support_and_the_menu_leads_there(committed_db):
    build_world()
    client = staff_client(verified=True)
    landing = client.get("/")
    assert (landing.status_code, landing["Location"]) == (302, "/support/")
    assert 'data-testid="nav-support"' in client.get("/support/").content.decode()
    # the matrix refreshes itself: htmx asks for its fragment alone
    fragment = client.get("/support/", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<div id="health-matrix"')
    assert "Latest security events" not in fragment
    alice = Client()
    alice.post("/login/", {"username": "alice", "password": PASSWORD})
    assert 'data-testid="nav-support"' not in alice.get("/").content.decode()


def open_breaker(tenant_id) -> None:
    with tenant_context(tenant_id):
        for _ in range(breaker.THRESHOLD):
            breaker.record_failure(connection_id=Connection.objects.get().id, error="DIP 503")


def test_the_dip_failing_for_every_tenant_is_one_platform_incident(committed_db):
    world = build_world()
    client = staff_client(verified=True)
    page = client.get("/support/").content.decode()
    assert 'data-testid="no-incidents"' in page
    assert 'data-testid="flow-acme-' in page
    assert 'data-testid="flow-globex-' in page
    open_breaker(world.acme.id)
    page = client.get("/support/").content.decode()
    # one tenant's open circuit is that tenant's own trouble
    assert 'data-testid="incident-tenant-acme"' in page
    assert "incident-dip-" not in page
    open_breaker(world.globex.id)
    matrix = cross_tenant.health_matrix()
    assert [(i.scope, i.tenants) for i in matrix.incidents] == [("platform", ["acme", "globex"])]
    # acme's channel is inbound (it still receives), globex's outbound (its sending is held)
    assert {(c.tenant_slug, c.status) for c in matrix.channels} == {
        ("acme", "degraded"),
        ("globex", "failing"),
    }
    key = matrix.incidents[0].key
    page = client.get("/support/").content.decode()
    assert f'data-testid="incident-{key}"' in page
    assert "incident-tenant-" not in page
    incident = client.get(f"/support/incidents/{key}/").content.decode()
    assert "is failing for 2 of 2 tenants" in incident
    assert "Acme Energy Supply" in incident
    assert "Globex Smart Data" in incident


def test_an_expired_certificate_stays_its_tenants_own_incident(committed_db):
    world = build_world()
    ca = TestCA.create()
    key = new_key()
    now = datetime.now(UTC)
    with tenant_context(world.globex.id):
        staged = certificates.import_certificate(
            connection=Connection.objects.get(),
            purpose="signing",
            data=pem(
                ca.issue(
                    key.public_key(),
                    not_before=now - timedelta(days=30),
                    not_after=now + timedelta(days=30),
                )
            )
            + key_pem(key),
            actor="pytest",
        )
        # time passes: the active certificate is two days past its end
        Certificate.objects.filter(id=staged.id).update(
            status="active", not_after=now - timedelta(days=2)
        )
    open_breaker(world.acme.id)
    matrix = cross_tenant.health_matrix()
    scopes = {i.key: (i.scope, i.severity) for i in matrix.incidents}
    assert scopes == {
        "tenant-acme": ("tenant", "degraded"),
        "tenant-globex": ("tenant", "failing"),
    }
    globex = next(i for i in matrix.incidents if i.key == "tenant-globex")
    assert "certificate expired" in globex.detail


def test_break_glass_in_the_console_reads_content_and_the_tenant_sees_it(committed_db):
    world = build_world()
    message_id = store_message(world.acme.id, mpan="1200023305967")
    client = staff_client(verified=True)
    url = f"/support/tenants/acme/messages/{message_id}/"
    page = client.get(url).content.decode()
    assert "1200023305967" not in page
    assert "reading" not in page
    refused = client.post(url, follow=True).content.decode()
    assert "No active break-glass grant" in refused
    assert "1200023305967" not in refused
    client.post("/support/tenants/acme/break-glass/", {"reason": "short", "minutes": "60"})
    with tenant_context(world.acme.id):
        assert not BreakGlassGrant.objects.exists()
    client.post(
        "/support/tenants/acme/break-glass/",
        {"reason": "INC-9 corrupt IF-021 from the DIP", "minutes": "60", "next": url},
    )
    read = client.post(url).content.decode()
    assert 'data-testid="mpan"><code>1200023305967' in read
    assert "&quot;reading&quot;: 42" in read
    alice = Client()
    alice.post("/login/", {"username": "alice", "password": PASSWORD})
    activity = alice.get("/activity/?action=support.").content.decode()
    assert "support.break_glass_granted" in activity
    assert "support.break_glass_read" in activity
    assert "Provider support (sam) may read" in alice.get("/").content.decode()
    charlie = Client()
    charlie.post("/login/", {"username": "charlie", "password": PASSWORD})
    assert "support.break_glass" not in charlie.get("/activity/").content.decode()
    with tenant_context(world.acme.id):
        grant_id = BreakGlassGrant.objects.get().id
    assert 'data-testid="break-glass-grant"' in activity
    # the tenant's admin ends it from the Activity page; content closes at once
    alice.post(f"/activity/break-glass/{grant_id}/end/")
    assert "1200023305967" not in client.post(url, follow=True).content.decode()
    assert 'data-testid="break-glass-grant"' not in alice.get("/activity/").content.decode()
    # staff can end their own grant early too
    client.post("/support/tenants/acme/break-glass/", {"reason": "INC-9 one more look, then done"})
    with tenant_context(world.acme.id):
        second = BreakGlassGrant.objects.get(ended_at__isnull=True).id
    client.post(f"/support/tenants/acme/break-glass/{second}/end/")
    with tenant_context(world.acme.id):
        ended = dict(BreakGlassGrant.objects.values_list("id", "ended_by"))
    assert ended == {grant_id: "alice", second: "support:sam"}
    assert client.get("/support/tenants/nosuch/").status_code == 404
