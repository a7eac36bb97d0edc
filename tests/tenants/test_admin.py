"""Staff in Django admin: support sees metadata across tenants, provider admins onboard."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from core.tenancy import user_context
from tenants.models import StaffRole, Tenant
from tests.conftest import PASSWORD, build_world


def staff(username: str, role: StaffRole) -> Client:
    """A staff member signed in with a verified second factor (staff pages require one)."""
    from django_otp import DEVICE_ID_SESSION_KEY

    from core.models import TOTPSecondFactor

    user = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=role.value)[0])
    device = TOTPSecondFactor.new_for(user)
    device.confirmed = True
    device.save()
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


@pytest.fixture
def committed_world(committed_db):
    return build_world()


def test_support_lists_every_tenants_metadata_but_no_secret(committed_world):
    sam = staff("sam", StaffRole.PROVIDER_SUPPORT)
    tenants = sam.get("/staff/admin/tenants/tenant/").content.decode()
    assert "Acme Energy Supply" in tenants
    assert "Globex Smart Data" in tenants
    connections = sam.get("/staff/admin/tenants/connection/")
    assert connections.status_code == 200
    assert "1000000001" in connections.content.decode()
    assert "acme-dip-api-key" not in connections.content.decode()
    assert sam.get("/staff/admin/tenants/tenant/add/").status_code == 403


def test_a_provider_admin_onboards_a_tenant_from_the_admin(committed_world):
    pat = staff("pat", StaffRole.PROVIDER_ADMIN)
    form = {
        "slug": "initech",
        "name": "Initech Supply",
        "mpid": "INIT",
        "role_code": "SUP",
        "dip_id": "1000000077",
        "environment": "UIT",
        "dip_base_url": "https://dip.example",
        "dcp_id": "",
        "admin_username": "ida",
        "admin_email": "ida@initech.example",
        "admin_password": "a-long-unusual-passphrase",
    }
    taken = pat.post("/staff/admin/tenants/tenant/add/", {**form, "dip_id": "1000000001"})
    assert "DIP ID 1000000001 is already registered" in taken.content.decode()
    assert not get_user_model().objects.filter(username="ida").exists()
    done = pat.post("/staff/admin/tenants/tenant/add/", form)
    assert done.status_code == 302
    ida = get_user_model().objects.get(username="ida")
    with user_context(ida.pk):
        assert Tenant.objects.get().slug == "initech"
    again = pat.post("/staff/admin/tenants/tenant/add/", {**form, "admin_username": "ida2"})
    assert "a tenant with slug &#x27;initech&#x27; already exists" in again.content.decode()


def test_tenant_users_are_not_let_into_admin(committed_world):
    client = Client()
    client.force_login(committed_world.alice.user)
    response = client.get("/staff/admin/tenants/tenant/")
    assert response.status_code == 302
    assert "/staff/admin/login/" in response["Location"]
