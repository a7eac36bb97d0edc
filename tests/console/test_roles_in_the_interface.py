"""Roles in the console: the menu offers only what the person may open, viewers see aggregates
only, MPANs and business keys are masked for roles without content rights (also in search and in
exports), and the CSV exports stream what the page lists, within the same rights."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.utils import timezone

from console.roles import mask
from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.exceptions.models import MessageException
from messaging.store import services as store
from tenants import services
from tenants.models import Connection, Role
from tests.conftest import PASSWORD
from tests.console.test_views import signed_in

MPAN = "1900012374324"
OTHER_MPAN = "1200023305967"


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def people(world):
    """acme's viewer and auditor besides alice (admin + certificate admin) and bob (operator),
    and three inbound messages: two of one business chain, one of another MPAN."""
    with tenant_context(world.acme.id):
        for username, role in [("victor", Role.VIEWER), ("audrey", Role.AUDITOR)]:
            services.create_user(
                username=username, email=f"{username}@acme.example", password=PASSWORD, roles=[role]
            )
        conn = Connection.objects.get()
        body = b"abc"
        stored = store.store_inbound_delivery(
            tenant_id=world.acme.id,
            connection_id=conn.id,
            channel_id=None,
            body=body,
            headers={},
            messages=[
                store.InboundMessageFacts(
                    offset=i,
                    length=1,
                    sha256=bytes([i + 1]) * 32,
                    transaction_id=f"T-ROLE-{i}",
                    interface_id=interface,
                    event_code=event,
                    mpan=mpan,
                    business_key=key,
                )
                for i, (interface, event, mpan, key) in enumerate(
                    [
                        ("IF-021", "D0010", MPAN, f"{MPAN}:chain-1"),
                        ("IF-033", "D0150", MPAN, f"{MPAN}:chain-1"),
                        ("IF-021", "D0010", OTHER_MPAN, f"{OTHER_MPAN}:chain-2"),
                    ]
                )
            ],
        )
        # Validation names the MPAN it refused, in free text.
        finding = SimpleNamespace(
            stage="contextual",
            severity="error",
            code="CTX-MPAN-CHECK",
            path="$",
            text=f"MPAN {MPAN} fails its check digit",
            rule="r",
        )
        store.record_findings(tenant_id=world.acme.id, findings=[(stored.message_ids[0], finding)])
        MessageException.objects.create(
            connection=conn,
            message_id=stored.message_ids[0],
            interface_id="IF-021",
            category="data_quality",
            severity="error",
            owner_queue="data-quality",
            to_act="client",
            code="CTX-MPAN-CHECK",
            title=f"MPAN {MPAN} fails its check digit",
        )
    return stored.message_ids


def nav(page: str) -> list[str]:
    start = page.index('<nav class="areas"')
    block = page[start : page.index("</nav>", start)]
    return [line.split(">")[1].split("<")[0] for line in block.split("<a ")[1:]]


def test_the_menu_offers_only_what_each_role_may_open(people):
    menus = {user: nav(signed_in(user).get("/").content.decode()) for user in ("alice", "bob")}
    menus["victor"] = nav(signed_in("victor").get("/").content.decode())
    menus["audrey"] = nav(signed_in("audrey").get("/").content.decode())
    assert "Activity" not in menus["bob"]  # was offered and answered "Not allowed"
    assert "Evidence" not in menus["bob"]
    assert "Messages" in menus["bob"]
    assert {"Activity", "Evidence", "Messages"} <= set(menus["alice"])
    assert {"Messages", "Outbound", "Exceptions", "Activity", "Evidence"}.isdisjoint(
        menus["victor"]
    )
    assert {"Overview", "Flows"} <= set(menus["victor"])
    assert {"Activity", "Evidence", "Messages"} <= set(menus["audrey"])
    # What is not offered is refused anyway.
    assert signed_in("bob").get("/activity/").status_code == 403
    assert signed_in("victor").get("/messages/").status_code == 403
    assert signed_in("victor").get("/messages/export.csv").status_code == 403
    assert signed_in("bob").get("/activity/export.csv").status_code == 403


def test_viewers_see_aggregates_only(people):
    victor = signed_in("victor")
    page = victor.get("/").content.decode()
    assert "3 inbound and 0 outbound in the last 24 hours" in page  # aggregates, yes
    assert "T-ROLE-0" not in page
    assert MPAN not in page
    assert victor.get(f"/messages/{people[0]}/").status_code == 403


def test_mpans_are_masked_for_roles_without_content_rights(people):
    alice, bob = signed_in("alice"), signed_in("bob")
    listing = alice.get("/messages/").content.decode()
    assert "T-ROLE-0" in listing  # metadata, yes
    assert MPAN not in listing
    assert mask(MPAN, content=False) in listing
    assert MPAN in bob.get("/messages/").content.decode()
    detail = alice.get(f"/messages/{people[0]}/").content.decode()
    # Neither as the MPAN, nor inside the business key, nor in a finding's or exception's text.
    assert MPAN not in detail
    assert "fails its check digit" in detail
    operator_detail = bob.get(f"/messages/{people[0]}/").content.decode()
    assert f"MPAN {MPAN} fails its check digit" in operator_detail
    queue = alice.get("/exceptions/").content.decode()
    assert "fails its check digit" in queue
    assert MPAN not in queue
    [exported] = read_csv(alice.get("/exceptions/export.csv"))
    assert exported["title"] == f"MPAN {mask(MPAN, content=False)} fails its check digit"
    [exported] = read_csv(bob.get("/exceptions/export.csv"))
    assert exported["title"] == f"MPAN {MPAN} fails its check digit"


def test_searching_by_mpan_needs_content_rights(people):
    refused = signed_in("alice").get("/messages/", {"q": MPAN}).content.decode()
    assert "searching by MPAN needs content rights" in refused
    assert "T-ROLE-0" not in refused  # no answer that would tell the MPAN has messages
    found = signed_in("bob").get("/messages/", {"q": MPAN}).content.decode()
    assert "T-ROLE-0" in found
    assert "T-ROLE-1" in found
    assert "T-ROLE-2" not in found


def test_search_by_event_code_interface_state_and_dates(people):
    bob = signed_in("bob")

    def found(**query) -> set[str]:
        page = bob.get("/messages/", query).content.decode()
        return {f"T-ROLE-{i}" for i in range(3) if f"T-ROLE-{i}" in page}

    assert found(event="D0150") == {"T-ROLE-1"}
    assert found(interface="if-021") == {"T-ROLE-0", "T-ROLE-2"}
    assert found(q="T-ROLE-2") == {"T-ROLE-2"}
    assert found(state="received") == {"T-ROLE-0", "T-ROLE-1", "T-ROLE-2"}
    assert found(state="delivered") == set()
    today = timezone.now().date()
    assert found(**{"from": today.isoformat(), "to": today.isoformat()}) == {
        "T-ROLE-0",
        "T-ROLE-1",
        "T-ROLE-2",
    }
    assert found(**{"to": (today - timedelta(days=1)).isoformat()}) == set()
    bad = bob.get("/messages/", {"from": "31/12/2026"}).content.decode()
    assert "From: not a date (YYYY-MM-DD)" in bad


def test_the_message_page_links_the_messages_of_its_business_chain(people):
    page = signed_in("bob").get(f"/messages/{people[0]}/").content.decode()
    linked = page[page.index('id="linked"') :]
    linked = linked[: linked.index("</section>")]
    assert f"/messages/{people[1]}/" in linked
    assert f"/messages/{people[2]}/" not in linked
    assert f"/messages/{people[0]}/" not in linked  # not itself


def read_csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_exports_stream_the_list_within_the_persons_rights(people, world):
    rows = read_csv(signed_in("bob").get("/messages/export.csv", {"interface": "IF-021"}))
    assert {r["transaction_id"] for r in rows} == {"T-ROLE-0", "T-ROLE-2"}
    assert {r["mpan"] for r in rows} == {MPAN, OTHER_MPAN}
    masked = read_csv(signed_in("alice").get("/messages/export.csv"))
    assert len(masked) == 3
    assert all(MPAN not in r["mpan"] and MPAN not in r["business_key"] for r in masked)
    assert {r["mpan"] for r in masked} == {
        mask(MPAN, content=False),
        mask(OTHER_MPAN, content=False),
    }
    # An MPAN search cannot go round the page's refusal through the export.
    assert signed_in("alice").get("/messages/export.csv", {"q": MPAN}).status_code == 400
    # Another tenant's export holds none of acme's messages.
    assert read_csv(signed_in("charlie").get("/messages/export.csv")) == []
    with tenant_context(world.acme.id):
        exports = AuditEvent.objects.filter(action="export.downloaded")
        assert exports.count() == 2  # the refused one wrote nothing


def test_outbound_exceptions_and_activity_export(people, world):
    audrey = signed_in("audrey")
    activity = read_csv(audrey.get("/activity/export.csv"))
    actions = {r["action"] for r in activity}
    assert {"identity.created", "channel.created", "export.downloaded"} <= actions
    assert read_csv(signed_in("bob").get("/exceptions/export.csv", {"state": "resolved"})) == []
    assert read_csv(signed_in("bob").get("/outbound/export.csv")) == []
    assert signed_in("bob").get("/outbound/export.csv", {"state": "nope"}).status_code == 400


def test_a_formula_in_a_cell_is_exported_as_text(people, world):
    with tenant_context(world.acme.id):
        conn = Connection.objects.get()
        store.store_inbound_delivery(
            tenant_id=world.acme.id,
            connection_id=conn.id,
            channel_id=None,
            body=b"z",
            headers={},
            messages=[
                store.InboundMessageFacts(
                    offset=0,
                    length=1,
                    sha256=b"\x09" * 32,
                    transaction_id="T-FORMULA",
                    correlation_id="=HYPERLINK(1)",
                )
            ],
        )
    rows = read_csv(signed_in("bob").get("/messages/export.csv", {"q": "T-FORMULA"}))
    assert [r["correlation_id"] for r in rows] == ["'=HYPERLINK(1)"]
