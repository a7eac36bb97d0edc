"""The demo seed and the onboarding command, as a provider admin runs them."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from core.devenv import DEMO_BANNER
from core.tenancy import tenant_context, user_context
from tenants.demo_people import ROLE_WORDS
from tenants.management.commands.seed_demo import demo_tenant_id
from tenants.models import (
    Channel,
    ChannelChange,
    Connection,
    DipIdentity,
    Membership,
    Role,
    StaffRole,
    Tenant,
)


def counts() -> dict[str, int]:
    result = {}
    for slug in ("acme", "globex"):
        with tenant_context(demo_tenant_id(slug)):
            result[slug] = (
                DipIdentity.objects.count() + Channel.objects.count() + Membership.objects.count()
            )
    return result


def test_the_demo_seed_is_idempotent(db, capsys):
    call_command("seed_demo")
    first = counts()
    call_command("seed_demo")
    assert counts() == first
    assert first["acme"] > 5
    assert "already present" in capsys.readouterr().out


def test_onboarding_creates_a_tenant_its_identity_and_admin(db):
    from django.contrib.auth import get_user_model

    call_command(
        "onboard_tenant",
        "--slug",
        "initech",
        "--name",
        "Initech Supply",
        "--mpid",
        "INIT",
        "--role-code",
        "SUP",
        "--dip-id",
        "1000000077",
        "--dip-base-url",
        "https://dip.example",
        "--admin-username",
        "ida",
        "--admin-email",
        "ida@initech.example",
        "--admin-password",
        "a-long-unusual-passphrase",
    )
    ida = get_user_model().objects.get(username="ida")
    with user_context(ida.pk):
        tenant = Tenant.objects.get()
        membership = Membership.objects.get()
    assert tenant.slug == "initech"
    assert membership.roles == ["tenant_admin"]
    with tenant_context(tenant.id):
        assert DipIdentity.objects.get().dip_id == "1000000077"


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("--mpid", "init", "MPID is four capital letters"),
        ("--dip-id", "12345", "DIP ID is 10 hexadecimal"),
        ("--admin-password", "short", "too short"),
    ],
)
def test_onboarding_names_bad_input_and_writes_nothing(committed_db, argument, value, message):
    import psycopg
    from django.conf import settings

    from tests.conftest import admin_conninfo

    args = {
        "--slug": "initech",
        "--name": "Initech",
        "--mpid": "INIT",
        "--role-code": "SUP",
        "--dip-id": "1000000077",
        "--dip-base-url": "https://dip.example",
        "--admin-username": "ida",
        "--admin-email": "ida@initech.example",
        "--admin-password": "a-long-unusual-passphrase",
    }
    args[argument] = value
    with pytest.raises(CommandError, match=message):
        call_command("onboard_tenant", *[part for pair in args.items() for part in pair])
    # Seen past RLS, over an administrative connection: nothing at all was committed.
    with psycopg.connect(admin_conninfo(settings.DATABASES["default"]["NAME"])) as admin:
        for table in ("tenants_tenant", "tenants_dipidentity", "tenants_membership"):
            assert admin.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        assert admin.execute(
            "SELECT count(*) FROM auth_user WHERE username = 'ida'"
        ).fetchone() == (0,)


def test_make_runs_banner_names_every_demo_login_with_its_roles(db):
    """The banner once listed four of the six demo people; it is now made from the same list the
    seed uses, and this checks the seed's result against it."""
    call_command("seed_demo")
    people = {}
    for slug in ("acme", "globex"):
        with tenant_context(demo_tenant_id(slug)):
            for membership in Membership.objects.select_related("user"):
                people.setdefault(membership.user.username, set()).update(membership.roles)
    for user in get_user_model().objects.filter(is_staff=True):
        people.setdefault(user.username, set()).update(g.name for g in user.groups.all())
    assert len(people) >= 6
    lines = {line.split()[0]: line for line in DEMO_BANNER.splitlines() if line.startswith("    ")}
    for username, roles in people.items():
        assert username in lines, f"{username} is missing from the banner"
        for role in roles:
            assert ROLE_WORDS[role] in lines[username]
    labels = {**{r.value: r.label for r in Role}, **{r.value: r.label for r in StaffRole}}
    assert {value: words.lower() for value, words in ROLE_WORDS.items()} == {
        value: label.lower() for value, label in labels.items()
    }


def test_a_demo_seeded_before_the_production_change_existed_gains_it(db):
    """`make run` on an existing demo database seeds what later versions added: acme's production
    connection with bob's proposal awaiting approval."""
    call_command("seed_demo")
    with tenant_context(demo_tenant_id("acme")):
        ChannelChange.objects.all().delete()
        production = Connection.objects.filter(environment="PRD")
        Channel.objects.filter(connection__in=production).delete()
        production.delete()
    call_command("seed_demo")
    with tenant_context(demo_tenant_id("acme")):
        [pending] = ChannelChange.objects.filter(state="proposed")
        assert pending.channel.connection.environment == "PRD"
        assert pending.proposed_by_name == "bob"
