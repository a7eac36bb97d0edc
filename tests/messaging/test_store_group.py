"""Group receipt (``store_inbound_group``): one statement per tenant per group, on its own psycopg
connection as the runtime role. What the webhook answers rests on it: dedupe within a delivery,
across the deliveries of a group and across groups; each tenant's rows under its own tenant; a
delivery the database refuses failing alone; counters that count stored messages only."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from core.tenancy import tenant_context
from messaging.models import Message, RawBlob
from messaging.store import services
from tenants.models import Channel, Connection
from tests.conftest import World, admin_conninfo, build_world
from tests.waiting import wait_for


def _delivery(tenant_id, channel: Channel, *transaction_ids: str) -> services.InboundDelivery:
    """A delivery of ``transaction_ids`` (one message each) as the webhook hands it over."""
    parts, facts, position = [], [], 1
    for n, tx in enumerate(transaction_ids):
        item = json.dumps(
            {"payload": {"CommonBlock": {"D0": {"transactionID": tx}}, "n": n}}
        ).encode()
        facts.append(
            services.InboundMessageFacts(
                offset=position,
                length=len(item),
                sha256=hashlib.sha256(item).digest(),
                transaction_id=tx,
                interface_id="IF-021",
                mpan="2000056535971",
            )
        )
        parts.append(item)
        position += len(item) + 1
    body = b"[" + b",".join(parts) + b"]"
    return services.InboundDelivery(
        tenant_id=str(tenant_id),
        connection_id=channel.connection_id,
        channel_id=channel.id,
        body_zstd=services.compress(body),
        body_sha256=hashlib.sha256(body).digest(),
        body_size=len(body),
        headers={"X-DIP-Signature-Date": "2026-12-06T10:00:00.000Z", "n": len(facts)},
        messages=facts,
        response_body=b'{"answer": "' + body[:16].hex().encode() + b'"}',
    )


@pytest.fixture
def store(committed_db) -> Iterator[tuple[World, Channel, Channel, psycopg.Connection]]:
    world = build_world()
    with tenant_context(world.acme.id):
        acme = Channel.objects.get(interface_id="IF-021", direction="inbound")
    with tenant_context(world.globex.id):
        from tenants import services as tenant_services

        globex = tenant_services.create_channel(
            connection=Connection.objects.get(), interface_id="IF-021", direction="inbound"
        )
    with services.open_group_connection() as conn:
        yield world, acme, globex, conn


def _rows(tenant_id) -> tuple[dict[str, tuple[int, int]], dict[int, RawBlob]]:
    """The tenant's messages (transaction id -> (id, raw id)) and raw deliveries by id."""
    with tenant_context(tenant_id):
        messages = {
            m.transaction_id: (m.id, m.raw_id)
            for m in Message.objects.only("transaction_id", "id", "raw_id")
        }
        raws = {r.id: r for r in RawBlob.objects.all()}
    return messages, raws


def _counted(tenant_id) -> tuple[int, int]:
    with tenant_context(tenant_id), connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(entered), 0) FROM messaging_flow_rollup")
        entered = int(cursor.fetchone()[0])
        cursor.execute("SELECT coalesce(sum(count), 0) FROM messaging_state_count")
        return entered, int(cursor.fetchone()[0])


def test_a_group_of_several_tenants_stores_each_delivery_under_its_own_tenant(store):
    world, acme, globex, conn = store
    group = [
        _delivery(world.acme.id, acme, "A1", "A2"),
        _delivery(world.globex.id, globex, "G1"),
        _delivery(world.acme.id, acme, "A3"),
        _delivery(world.globex.id, globex, "G2", "G3"),
    ]
    outcomes = services.store_inbound_group(conn, group)

    assert all(isinstance(o, services.StoredDelivery) for o in outcomes)
    assert [o.duplicate for o in outcomes] == [[False, False], [False], [False], [False, False]]
    acme_messages, acme_raws = _rows(world.acme.id)
    globex_messages, globex_raws = _rows(world.globex.id)
    assert set(acme_messages) == {"A1", "A2", "A3"}
    assert set(globex_messages) == {"G1", "G2", "G3"}
    # each outcome names its own delivery and its own messages, in the group's order
    expected = [(acme_messages, ["A1", "A2"]), (globex_messages, ["G1"])]
    expected += [(acme_messages, ["A3"]), (globex_messages, ["G2", "G3"])]
    for outcome, delivery, (messages, txns) in zip(outcomes, group, expected, strict=True):
        assert outcome.message_ids == [messages[tx][0] for tx in txns]
        assert {messages[tx][1] for tx in txns} == {outcome.raw_id}
        raw = (acme_raws | globex_raws)[outcome.raw_id]
        assert bytes(raw.body_zstd) == delivery.body_zstd
        assert bytes(raw.body_sha256) == delivery.body_sha256
        assert raw.body_size == delivery.body_size
        assert raw.headers == delivery.headers
        assert raw.message_count == len(delivery.messages)
        assert (raw.response_status, bytes(raw.response_body)) == (201, delivery.response_body)
        assert raw.channel_id == delivery.channel_id
    assert set(acme_raws) == {outcomes[0].raw_id, outcomes[2].raw_id}
    assert set(globex_raws) == {outcomes[1].raw_id, outcomes[3].raw_id}
    with tenant_context(world.acme.id):
        slices = {m.transaction_id: (m.raw_offset, m.raw_length) for m in Message.objects.all()}
    assert slices["A2"] == (group[0].messages[1].offset, group[0].messages[1].length)
    assert _counted(world.acme.id) == (3, 3)
    assert _counted(world.globex.id) == (3, 3)
    # one transaction for all of it, both tenants' statements included
    moments = set()
    for tenant in (world.acme.id, world.globex.id):
        with tenant_context(tenant), connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT created_at FROM messaging_raw")
            moments |= {row[0] for row in cursor.fetchall()}
    assert len(moments) == 1
    # and nothing of it outlives the group on the connection: no transaction, no tenant
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0] in ("", None)


def test_a_group_refused_in_a_later_statement_stores_nothing_of_the_earlier_ones(store):
    """The group's statements run in one implicit transaction: when the server refuses the
    second tenant's, the first tenant's (already executed) is rolled back with it."""
    world, acme, globex, conn = store
    gone = services.InboundDelivery(
        **{**_delivery(world.globex.id, globex, "G9").__dict__, "channel_id": 10**12}
    )
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        services._store_group(conn, [_delivery(world.acme.id, acme, "A9"), gone])
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert _rows(world.acme.id) == ({}, {})
    assert _counted(world.acme.id) == (0, 0)
    # the connection goes on: the next group is stored and counted
    (outcome,) = services.store_inbound_group(conn, [_delivery(world.acme.id, acme, "A9")])
    assert isinstance(outcome, services.StoredDelivery)
    assert set(_rows(world.acme.id)[0]) == {"A9"}


def test_duplicates_within_a_delivery_within_a_group_and_across_groups(store):
    world, acme, globex, conn = store
    first = services.store_inbound_group(
        conn,
        [
            _delivery(world.acme.id, acme, "T1", "T1", "T2"),  # T1 twice in one delivery
            _delivery(world.globex.id, globex, "T2"),  # the same id in another tenant: not a dup
            _delivery(world.acme.id, acme, "T2", "T3"),  # T2 claimed earlier in this group
        ],
    )
    second = services.store_inbound_group(
        conn,
        [
            _delivery(world.acme.id, acme, "T3", "T4"),  # T3 stored by the group before
            _delivery(world.acme.id, acme, "T4"),
        ],
    )
    acme_messages, acme_raws = _rows(world.acme.id)
    globex_messages, _ = _rows(world.globex.id)
    ids = {tx: mid for tx, (mid, _raw) in acme_messages.items()}
    assert set(ids) == {"T1", "T2", "T3", "T4"}
    assert [o.duplicate for o in first] == [[False, True, False], [False], [True, False]]
    assert [o.message_ids for o in first] == [
        [ids["T1"], ids["T1"], ids["T2"]],
        [globex_messages["T2"][0]],
        [ids["T2"], ids["T3"]],
    ]
    assert [o.duplicate for o in second] == [[True, False], [True]]
    assert [o.message_ids for o in second] == [[ids["T3"], ids["T4"]], [ids["T4"]]]
    # every delivery is kept; each message is stored once, with the delivery that brought it
    assert len(acme_raws) == 4
    assert acme_messages["T3"][1] == first[2].raw_id
    assert acme_messages["T4"][1] == second[0].raw_id
    assert _counted(world.acme.id) == (4, 4)
    assert _counted(world.globex.id) == (1, 1)


def test_a_delivery_the_database_refuses_fails_alone_and_its_neighbours_are_stored(store):
    world, acme, globex, conn = store
    gone = _delivery(world.acme.id, acme, "X1")
    # A channel that does not exist (as when one is deleted while its endpoint is cached).
    gone = services.InboundDelivery(**{**gone.__dict__, "channel_id": 10**12})
    outcomes = services.store_inbound_group(
        conn,
        [
            _delivery(world.acme.id, acme, "N1"),
            _delivery(world.globex.id, globex, "N2"),
            gone,
            _delivery(world.acme.id, acme, "N1", "N3"),  # N1 again: still a duplicate
        ],
    )
    assert isinstance(outcomes[2], services.DeliveryRefused)
    stored = [o for o in outcomes if isinstance(o, services.StoredDelivery)]
    assert [o.duplicate for o in stored] == [[False], [False], [True, False]]
    acme_messages, acme_raws = _rows(world.acme.id)
    assert set(acme_messages) == {"N1", "N3"}
    assert len(acme_raws) == 2
    assert set(_rows(world.globex.id)[0]) == {"N2"}
    assert _counted(world.acme.id) == (2, 2)
    # the connection is usable for the next group
    later = services.store_inbound_group(conn, [_delivery(world.acme.id, acme, "N4")])
    assert isinstance(later[0], services.StoredDelivery)
    assert later[0].duplicate == [False]


def test_a_key_a_concurrent_group_claims_meanwhile_is_a_duplicate_with_the_original_id(store):
    world, acme, _globex, conn = store
    with services.open_group_connection() as other:
        # Another group claims T9 and holds its transaction open...
        other.execute("BEGIN")
        other.execute("SELECT set_config('app.tenant_id', %s, true)", [str(world.acme.id)])
        other.execute(
            services._GROUP_TENANT_SQL,
            services._tenant_params(str(world.acme.id), [_delivery(world.acme.id, acme, "T9")]),
        )
        # ...so this group's claim of T9 waits for it, after its statement's snapshot was taken.
        done: Future[list] = Future()

        def run() -> None:
            try:
                done.set_result(
                    services.store_inbound_group(conn, [_delivery(world.acme.id, acme, "T8", "T9")])
                )
            except BaseException as exc:
                done.set_exception(exc)

        threading.Thread(target=run, daemon=True).start()
        backend = conn.info.backend_pid
        with psycopg.connect(admin_conninfo(settings.DATABASES["default"]["NAME"])) as admin:
            wait_for(
                lambda: admin.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                    [backend],
                ).fetchone()[0],
                timeout=30,
                what="the group to wait for the other's claim",
            )
        other.execute("COMMIT")
        (outcome,) = done.result(30)
    messages, raws = _rows(world.acme.id)
    assert outcome.duplicate == [False, True]
    assert outcome.message_ids == [messages["T8"][0], messages["T9"][0]]
    assert messages["T9"][1] != outcome.raw_id
    assert len(raws) == 2
    assert _counted(world.acme.id) == (2, 2)


def test_a_delivery_naming_another_tenants_channel_is_refused_alone(store):
    world, acme, globex, conn = store
    role = conn.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert role.fetchone()[0] is False  # the runtime role: row-level security applies
    crossed = services.InboundDelivery(
        **{
            **_delivery(world.acme.id, acme, "S1").__dict__,
            "connection_id": globex.connection_id,
            "channel_id": globex.id,
        }
    )
    outcomes = services.store_inbound_group(
        conn,
        [_delivery(world.acme.id, acme, "S0"), crossed, _delivery(world.globex.id, globex, "S2")],
    )
    assert [type(o) for o in outcomes] == [
        services.StoredDelivery,
        services.DeliveryRefused,
        services.StoredDelivery,
    ]
    assert set(_rows(world.acme.id)[0]) == {"S0"}
    assert set(_rows(world.globex.id)[0]) == {"S2"}


def _raw_values_out_of_line(admin: psycopg.Connection) -> int:
    """How many values of raw rows are kept out of line, in their partitions' TOAST relations."""
    toasts = admin.execute(
        "SELECT c.reltoastrelid::regclass::text FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messaging_raw'::regclass"
    ).fetchall()
    return sum(
        admin.execute(f"SELECT count(DISTINCT chunk_id) FROM {toast}").fetchone()[0]
        for (toast,) in toasts
    )


def test_a_single_pushs_raw_row_stays_whole_and_only_a_larger_one_goes_out_of_line(store):
    """A single-message push's raw row (about 3.4 KB with the DIP's certificate in its headers)
    is stored whole in its page, nothing compressed or moved out of line, although it is over
    PostgreSQL's own 2 KB threshold (migration 0024); a row larger than a page still goes out of
    line."""
    world, acme, _globex, conn = store
    # About 2 KB that does not compress, as the certificate's base64 does not.
    certificate = base64.b64encode(os.urandom(1536)).decode()
    single = _delivery(world.acme.id, acme, "T-WHOLE-1")
    single = dataclasses.replace(
        single, headers={**single.headers, "X-DIP-Signature-Cert": certificate}
    )
    large = dataclasses.replace(
        _delivery(world.acme.id, acme, "T-WHOLE-2"), body_zstd=os.urandom(10_000)
    )
    with psycopg.connect(admin_conninfo(settings.DATABASES["default"]["NAME"])) as admin:
        before = _raw_values_out_of_line(admin)
        [stored] = services.store_inbound_group(conn, [single])
        assert _raw_values_out_of_line(admin) == before
        services.store_inbound_group(conn, [large])
        assert _raw_values_out_of_line(admin) == before + 1
    with tenant_context(world.acme.id):
        raw = RawBlob.objects.get(id=stored.raw_id)
    assert raw.headers["X-DIP-Signature-Cert"] == certificate
