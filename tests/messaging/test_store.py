"""The message store: receipt with dedupe, immutability, the state machine, claiming, retries, the
sweeper, counters and partitions, on real PostgreSQL as the runtime role."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError, ProgrammingError

from core.tenancy import tenant_context
from messaging.models import Message, RawBlob, Transition
from messaging.store import selectors, services, sweeper
from messaging.store.ids import id_floor, id_time, month_start
from messaging.store.states import TransitionNotAllowed
from tenants import services as tenant_services
from tenants.models import Channel, Connection
from tests.conftest import admin_conninfo, build_world, runtime_conninfo


def _delivery(*transaction_ids: str | None) -> tuple[bytes, list[services.InboundMessageFacts]]:
    """A JSON array body and the facts the webhook would read from it, with exact slices."""
    parts, facts, position = [], [], 1
    for n, tx in enumerate(transaction_ids):
        item = json.dumps(
            {"payload": {"CommonBlock": {"D0": {"transactionID": tx}}, "n": n, "pad": "x" * 50}}
        ).encode()
        facts.append(
            services.InboundMessageFacts(
                offset=position,
                length=len(item),
                sha256=hashlib.sha256(item).digest(),
                transaction_id=tx,
                interface_id="IF-021",
                mpan="2000056535971",
                business_key=f"IF-021:2000056535971:{n}",
            )
        )
        parts.append(item)
        position += len(item) + 1
    return b"[" + b",".join(parts) + b"]", facts


def _acme_channel(world) -> tuple[int, int]:
    with tenant_context(world.acme.id):
        conn = Connection.objects.get()
        channel = Channel.objects.get(connection=conn)
    return conn.id, channel.id


def _store(world, *transaction_ids: str | None) -> services.StoredDelivery:
    connection_id, channel_id = _acme_channel(world)
    body, facts = _delivery(*transaction_ids)
    with tenant_context(world.acme.id):
        return services.store_inbound_delivery(
            tenant_id=world.acme.id,
            connection_id=connection_id,
            channel_id=channel_id,
            body=body,
            headers={"X-DIP-Signature-Date": "2026-11-29T10:00:00.000Z"},
            messages=facts,
            response_status=201,
            response_body=b"[]",
        )


def test_ids_are_time_ordered_and_map_back_to_their_time() -> None:
    moment = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
    assert id_time(id_floor(moment)) == moment
    assert id_floor(moment + timedelta(milliseconds=1)) > id_floor(moment)
    assert month_start(moment) == datetime(2026, 11, 1, tzinfo=UTC)
    assert month_start(moment, offset=2) == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="aware"):
        id_floor(datetime(2026, 1, 1))  # noqa: DTZ001


def test_ids_are_drawn_inline_as_the_runtime_role_under_any_search_path(world) -> None:
    """``busbar_next_id()`` pins no search_path (messaging migration 0023), so PostgreSQL inlines
    it into the statements that draw ids, one call per row; its body still resolves under a
    caller's empty search_path."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN VERBOSE SELECT busbar_next_id()")
        plan = " ".join(row[0] for row in cursor.fetchall())
        assert "nextval(" in plan
        assert "busbar_next_id" not in plan
        cursor.execute("SET LOCAL search_path = ''")
        cursor.execute("SELECT public.busbar_next_id(), public.busbar_next_id()")
        first, second = cursor.fetchone()
    assert second > first
    assert abs(id_time(first) - datetime.now(UTC)) < timedelta(minutes=1)


def test_it_stores_a_delivery_once_with_exact_bytes(world) -> None:
    stored = _store(world, "T-1", "T-2", "T-3")
    assert stored.duplicate == [False, False, False]
    body, _ = _delivery("T-1", "T-2", "T-3")
    with tenant_context(world.acme.id):
        raw = RawBlob.objects.get(id=stored.raw_id)
        assert raw.body_size == len(body)
        assert bytes(raw.body_sha256) == hashlib.sha256(body).digest()
        assert len(bytes(raw.body_zstd)) < len(body)  # compressed, not a copy
        messages = list(Message.objects.filter(raw_id=stored.raw_id).order_by("id"))
        assert [m.id for m in messages] == stored.message_ids
        assert [m.transaction_id for m in messages] == ["T-1", "T-2", "T-3"]
        assert {m.state for m in messages} == {"received"}
        full = services.raw_body(tenant_id=world.acme.id, raw_id=stored.raw_id)
        assert full == body
        for message in messages:
            exact = services.message_bytes(message)
            assert json.loads(exact)["payload"]["CommonBlock"]["D0"]["transactionID"] == (
                message.transaction_id
            )
            assert hashlib.sha256(exact).digest() == bytes(message.sha256)


def test_a_duplicate_delivery_has_no_second_effect(world) -> None:
    first = _store(world, "T-1", "T-2")
    second = _store(world, "T-2", "T-3", "T-3")
    assert second.duplicate == [True, False, True]
    assert second.message_ids[0] == first.message_ids[1]
    assert second.message_ids[1] == second.message_ids[2]
    with tenant_context(world.acme.id):
        assert Message.objects.count() == 3
        assert RawBlob.objects.count() == 2  # both deliveries kept as evidence
        counts = selectors.state_counts(direction="inbound")
    assert counts == {("inbound", "IF-021", "received"): 3}


def test_messages_without_a_transaction_id_dedupe_on_their_bytes(world) -> None:
    first = _store(world, None)
    again = _store(world, None)
    assert again.duplicate == [True]
    assert again.message_ids == first.message_ids


def test_another_tenant_sees_nothing_of_the_store(world) -> None:
    stored = _store(world, "T-1")
    with tenant_context(world.globex.id):
        assert not Message.objects.exists()
        assert not RawBlob.objects.exists()
        assert selectors.get_message(message_id=stored.message_ids[0]) is None
        with pytest.raises(LookupError, match="no raw blob"):
            services.raw_body(tenant_id=world.globex.id, raw_id=stored.raw_id)
        assert selectors.state_counts() == {}


def _refusal(sql: str, params: list, tenant_id) -> tuple[str | None, str]:
    """The SQLSTATE and message of the database's refusal of ``sql``."""
    with (
        pytest.raises(DatabaseError) as caught,
        tenant_context(tenant_id),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, params)
    return getattr(caught.value.__cause__, "sqlstate", None), str(caught.value)


def _refused(sql: str, params: list, tenant_id) -> str:
    """The message of the database's refusal of ``sql``."""
    return _refusal(sql, params, tenant_id)[1]


def test_the_runtime_role_cannot_change_or_remove_raw_bytes(world) -> None:
    stored = _store(world, "T-1")
    tenant = world.acme.id
    assert "permission denied" in _refused(
        "UPDATE messaging_raw SET body_zstd = NULL WHERE id = %s", [stored.raw_id], tenant
    )
    assert "permission denied" in _refused(
        "DELETE FROM messaging_raw WHERE id = %s", [stored.raw_id], tenant
    )
    assert "permission denied" in _refused(
        "DELETE FROM messaging_message WHERE id = %s", [stored.message_ids[0]], tenant
    )
    assert "permission denied" in _refused(
        "UPDATE messaging_message SET mpan = '1' WHERE id = %s", [stored.message_ids[0]], tenant
    )
    assert "permission denied" in _refused(
        "UPDATE messaging_transition SET reason = 'edited'", [], tenant
    )


def test_a_message_refers_only_to_its_own_tenants_raw_payloads(world) -> None:
    """The reference to the raw payload is checked by one query per statement (migration 0021):
    a payload of another tenant, or none, is refused as a foreign key would refuse it, whether a
    statement inserts one row or many, and when an update first sets the payload."""
    globex_raw = _store_for(world.globex, "G-1").raw_id
    stored = _store(world, "T-1")
    connection_id, channel_id = _acme_channel(world)
    insert = (
        "INSERT INTO messaging_message (tenant_id, direction, connection_id, channel_id,"
        " raw_id, transaction_id, state) SELECT %s, 'inbound', %s, %s, r, 'X-' || r, 'received'"
        " FROM unnest(%s::bigint[]) AS r"
    )
    acme = str(world.acme.id)
    for raws in ([globex_raw], [stored.raw_id, globex_raw], [stored.raw_id, 1]):
        refusal = _refused(insert, [acme, connection_id, channel_id, raws], world.acme.id)
        assert "that is not its tenant's" in refusal, raws
    with tenant_context(world.acme.id), connection.cursor() as cursor:
        cursor.execute(insert, [acme, connection_id, channel_id, [stored.raw_id, stored.raw_id]])
        assert cursor.rowcount == 2  # its own payload, twice: accepted
    with tenant_context(world.acme.id):
        outbound = services.store_outbound_messages(
            tenant_id=world.acme.id,
            connection_id=connection_id,
            channel_id=channel_id,
            source_body=b"{}",
            headers={},
            messages=[services.OutboundMessageFacts(interface_id="IF-021")],
        )[1][0]
    refusal = _refused(
        "UPDATE messaging_message SET raw_id = %s WHERE id = %s",
        [globex_raw, outbound],
        world.acme.id,
    )
    assert "that is not its tenant's" in refusal


RAW_INSERT = (
    "INSERT INTO messaging_raw (tenant_id, kind, direction, connection_id, channel_id,"
    " body_sha256, body_size) SELECT %s, 'delivery', 'inbound', c, %s, sha256(''::bytea), 0"
    " FROM unnest(%s::bigint[]) AS c"
)


def test_stored_rows_name_only_their_own_tenants_connection_and_channel(world) -> None:
    """Messages, raw payloads and dedupe keys are checked once per statement, not by a key per
    row (migration 0022): another tenant's connection or channel, or a tenant that does not
    exist, is refused as a key refuses it (23503), in a statement of one row or of many."""
    stored = _store(world, "T-1")
    acme = str(world.acme.id)
    connection_id, channel_id = _acme_channel(world)
    with tenant_context(world.globex.id):
        globex_connection = Connection.objects.get().id
        globex_channel = Channel.objects.get(connection_id=globex_connection).id
    message_insert = (
        "INSERT INTO messaging_message (tenant_id, direction, connection_id, channel_id,"
        " raw_id, transaction_id, state) SELECT %s, 'inbound', c, %s, %s,"
        " 'X-' || gen_random_uuid(), 'received' FROM unnest(%s::bigint[]) AS c"
    )
    for connections_named, channel, expected in (
        ([globex_connection], channel_id, f"connection {globex_connection} is not a connection"),
        ([connection_id, globex_connection], channel_id, "is not a connection of tenant"),
        ([connection_id, connection_id], globex_channel, f"channel {globex_channel} is not"),
        ([connection_id], 0, "channel 0 is not a channel of tenant"),
    ):
        state, text = _refusal(
            message_insert, [acme, channel, stored.raw_id, connections_named], world.acme.id
        )
        assert (state, expected in text) == ("23503", True), text
        state, text = _refusal(RAW_INSERT, [acme, channel, connections_named], world.acme.id)
        assert (state, expected in text) == ("23503", True), text
    with tenant_context(world.acme.id), connection.cursor() as cursor:
        cursor.execute(
            message_insert, [acme, channel_id, stored.raw_id, [connection_id, connection_id]]
        )
        assert cursor.rowcount == 2  # its own connection and channel: accepted
        cursor.execute(RAW_INSERT, [acme, None, [connection_id]])
        assert cursor.rowcount == 1  # a payload with no channel names a connection only
    nobody = uuid.uuid4()
    state, text = _refusal(
        "INSERT INTO messaging_inbound_key (tenant_id, dedupe_key, message_id)"
        " VALUES (%s, 'T-9', 1), (%s, 'T-10', 2)",
        [str(nobody), str(nobody)],
        nobody,
    )
    assert (state, f"tenant {nobody} does not exist" in text) == ("23503", True), text


def test_timeline_rows_and_findings_name_only_their_own_tenants_messages(world) -> None:
    """A timeline row or a finding is checked against its message once per statement, not by a
    key per row (migration 0025): one naming a message that does not exist, or another tenant's,
    is refused as a key refuses it (23503), alone or among rows that are fine."""
    own = _store(world, "T-1").message_ids[0]
    globex = _store_for(world.globex, "G-1").message_ids[0]
    acme = str(world.acme.id)
    inserts = {
        "messaging_transition": (
            "INSERT INTO messaging_transition (tenant_id, message_id, from_state, to_state, actor)"
            " SELECT %s, m, 'received', 'received', 'test' FROM unnest(%s::bigint[]) AS m"
        ),
        "messaging_finding": (
            "INSERT INTO messaging_finding (tenant_id, message_id, stage, severity, code)"
            " SELECT %s, m, 'syntactic', 'info', 'TEST' FROM unnest(%s::bigint[]) AS m"
        ),
    }
    for table, insert in inserts.items():
        for named in ([globex], [own, globex], [own, 1]):
            state, text = _refusal(insert, [acme, named], world.acme.id)
            expected = f"{table} row"
            assert (state, expected in text, "that is not its tenant's" in text) == (
                "23503",
                True,
                True,
            ), text
        with tenant_context(world.acme.id), connection.cursor() as cursor:
            cursor.execute(insert, [acme, [own, own]])
            assert cursor.rowcount == 2  # its own message, twice: accepted


def _tuples_read(table: str) -> int:
    """Tuples this transaction has read from ``table``'s partitions: by sequential scans of
    them and by scans of their indexes (each relation's count of tuples returned)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH parts AS (SELECT inhrelid AS oid FROM pg_inherits"
            "               WHERE inhparent = %s::regclass)"
            " SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(r.oid)), 0) FROM ("
            "  SELECT oid FROM parts"
            "  UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM parts)"
            " ) r",
            [table],
        )
        return int(cursor.fetchone()[0])


def test_a_stored_messages_payload_is_found_by_its_key_not_among_all_the_tenants(world) -> None:
    """The check that a delivery's new messages name their tenant's raw payload probes that
    payload by key, once: its cost does not grow with the payloads the tenant has stored. Before
    migration 0025 the planner read every one of them for a statement of 100 messages."""
    connection_id, channel_id = _acme_channel(world)
    acme = str(world.acme.id)
    with tenant_context(world.acme.id), connection.cursor() as cursor:
        cursor.execute(RAW_INSERT, [acme, channel_id, [connection_id] * 400])
        cursor.execute("SELECT max(id) FROM messaging_raw")
        newest = cursor.fetchone()[0]
        before = _tuples_read("messaging_raw")
        cursor.execute(
            "INSERT INTO messaging_message (tenant_id, direction, connection_id, channel_id,"
            " raw_id, transaction_id, state) SELECT %s, 'inbound', %s, %s, %s, 'P-' || n,"
            " 'received' FROM generate_series(1, 100) AS n",
            [acme, connection_id, channel_id, newest],
        )
        read = _tuples_read("messaging_raw") - before
    assert 1 <= read <= 5, read  # one probe: before migration 0025, all 400


def _runtime_session(tenant_id) -> psycopg.Connection:
    conn = psycopg.connect(runtime_conninfo())
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant_id)])
    conn.commit()
    return conn


def test_a_connection_or_channel_named_by_stored_rows_cannot_be_deleted(committed_db) -> None:
    """The other half of a key: a delete of what stored rows name is refused, and waits for a
    transaction still inserting rows that name it (they lock it as a key would)."""
    world = build_world()
    _store(world, "T-1")
    connection_id, channel_id = _acme_channel(world)
    with tenant_context(world.acme.id):
        identity = Connection.objects.get().identity
        spare = tenant_services.create_connection(
            identity=identity, environment="PRD", dip_base_url="https://dip.example"
        )
        named_later = tenant_services.create_channel(
            connection=spare, interface_id="IF-036", direction="inbound"
        )
        unnamed = tenant_services.create_channel(
            connection=spare, interface_id="IF-031", direction="inbound"
        )
    deleting, inserting = _runtime_session(world.acme.id), _runtime_session(world.acme.id)
    try:
        for table, row in (("tenants_channel", channel_id), ("tenants_connection", connection_id)):
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match="named by stored"):
                deleting.execute(f"DELETE FROM {table} WHERE id = %s", [row])
            deleting.rollback()
        inserting.execute(RAW_INSERT, [str(world.acme.id), named_later.id, [spare.id]])
        deleting.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            deleting.execute("DELETE FROM tenants_channel WHERE id = %s", [named_later.id])
        deleting.rollback()
        inserting.commit()
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="named by stored"):
            deleting.execute("DELETE FROM tenants_channel WHERE id = %s", [named_later.id])
        deleting.rollback()
        deleted = deleting.execute("DELETE FROM tenants_channel WHERE id = %s", [unnamed.id])
        assert deleted.rowcount == 1  # nothing names it: the guard is not a blanket refusal
        deleting.commit()
    finally:
        deleting.close()
        inserting.close()


def _store_for(tenant, *transaction_ids: str) -> services.StoredDelivery:
    with tenant_context(tenant.id):
        conn = Connection.objects.get()
        channel = Channel.objects.filter(connection=conn).first()
        body, facts = _delivery(*transaction_ids)
        return services.store_inbound_delivery(
            tenant_id=tenant.id,
            connection_id=conn.id,
            channel_id=channel.id if channel else None,
            body=body,
            headers={},
            messages=facts,
        )


def test_write_once_columns_take_a_value_once(world) -> None:
    stored = _store(world, "T-1")
    message_id = stored.message_ids[0]
    message = "transaction_id is written once"
    assert message in _refused(
        "UPDATE messaging_message SET transaction_id = 'T-other' WHERE id = %s",
        [message_id],
        world.acme.id,
    )
    with tenant_context(world.acme.id):
        # the work columns are the runtime role's to change
        assert Message.objects.filter(id=message_id).update(last_error="checked") == 1


def test_the_trigger_itself_refuses_changes_by_anyone_but_the_owner(committed_db) -> None:
    """Grants already stop the runtime role; this grants it UPDATE and DELETE for one transaction
    to show the trigger refuses on its own, and that the owner (retention) gets through."""
    world = build_world()
    stored = _store(world, "T-1")
    runtime = settings.DB_RUNTIME_ROLE
    with psycopg.connect(admin_conninfo(settings.DATABASES["default"]["NAME"])) as admin:
        for statement in ("UPDATE messaging_raw SET headers = '{}'", "DELETE FROM messaging_raw"):
            with admin.transaction(force_rollback=True):
                admin.execute(f'GRANT UPDATE, DELETE ON messaging_raw TO "{runtime}"')
                admin.execute(f'SET LOCAL ROLE "{runtime}"')
                admin.execute("SELECT set_config('app.tenant_id', %s, true)", [str(world.acme.id)])
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is immutable"):
                    admin.execute(statement + " WHERE id = %s", [stored.raw_id])
    with connections["owner"].cursor() as cursor, transaction.atomic(using="owner"):
        cursor.execute("SELECT set_config('app.tenant_id', %s, true)", [str(world.acme.id)])
        cursor.execute("UPDATE messaging_raw SET body_zstd = NULL WHERE id = %s", [stored.raw_id])
        assert cursor.rowcount == 1  # retention may blank a payload; its hash stays
    connections["owner"].close()


def test_transition_moves_only_from_the_expected_state(world) -> None:
    stored = _store(world, "T-1", "T-2")
    tenant = world.acme.id
    with tenant_context(tenant):
        moved = services.transition(
            tenant_id=tenant,
            message_ids=stored.message_ids,
            from_state="received",
            to_state="valid",
            actor="worker",
            reason="schema ok",
            detail={"findings": 0},
        )
        assert moved == sorted(stored.message_ids)
        stale = services.transition(
            tenant_id=tenant,
            message_ids=stored.message_ids,
            from_state="received",
            to_state="invalid",
            actor="stale worker",
        )
        assert stale == []
        timeline = selectors.list_timeline(message_id=stored.message_ids[0])
        assert [(t.from_state, t.to_state, t.actor, t.reason) for t in timeline] == [
            ("received", "valid", "worker", "schema ok")
        ]
        assert timeline[0].detail == {"findings": 0}
        counts = selectors.state_counts()
        assert counts == {("inbound", "IF-021", "valid"): 2}
        hourly = selectors.hourly_entries(
            since=datetime.now(UTC) - timedelta(hours=2), state="valid"
        )
        assert sum(hourly["IF-021"].values()) == 2


def test_transition_refuses_an_edge_the_machine_does_not_have(world) -> None:
    with tenant_context(world.acme.id), pytest.raises(TransitionNotAllowed, match="allowed:"):
        services.transition(
            tenant_id=world.acme.id,
            message_ids=[1],
            from_state="received",
            to_state="delivered",
            actor="test",
        )


def test_claim_leases_due_messages_and_counts_attempts(world) -> None:
    stored = _store(world, "T-1", "T-2", "T-3")
    tenant = world.acme.id
    with tenant_context(tenant):
        first = services.claim_due(
            tenant_id=tenant, direction="inbound", state="received", limit=2, lease_seconds=60
        )
        assert [c.id for c in first] == stored.message_ids[:2]
        assert {c.attempts for c in first} == {1}
        rest = services.claim_due(
            tenant_id=tenant, direction="inbound", state="received", limit=10, lease_seconds=60
        )
        assert [c.id for c in rest] == stored.message_ids[2:]  # leased ones are not due
        services.schedule_retry(
            tenant_id=tenant, message_ids=[first[0].id], delay_seconds=0, error="timeout"
        )
        again = services.claim_due(
            tenant_id=tenant, direction="inbound", state="received", limit=10, lease_seconds=60
        )
        assert [(c.id, c.attempts) for c in again] == [(first[0].id, 2)]
        later = services.schedule_retry(
            tenant_id=tenant,
            message_ids=[first[0].id],
            delay_seconds=1,
            error="busy",
            retry_after=3600,
        )
        assert later is not None
        assert later > datetime.now(UTC) + timedelta(minutes=59)
        assert (
            services.claim_due(
                tenant_id=tenant,
                direction="inbound",
                state="received",
                limit=10,
                lease_seconds=60,
                message_ids=[first[0].id],
            )
            == []
        )
        assert Message.objects.get(id=first[0].id).last_error == "busy"


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    rng = random.Random(7)
    samples = [services.backoff_delay(5, base=2, cap=20, rng=rng) for _ in range(200)]
    assert all(0 <= s <= 20 for s in samples)  # 2 * 2**4 = 32, capped at 20
    assert max(samples) > 15  # spread across the whole range
    assert min(samples) < 5
    assert all(services.backoff_delay(1, base=2, cap=20, rng=rng) <= 2 for _ in range(50))


def test_the_sweeper_re_enqueues_stranded_work_once_per_grace_and_parks_poison(world) -> None:
    stored = _store(world, "T-1", "T-2", "T-3")
    tenant = world.acme.id
    stranded, fresh, poison = stored.message_ids
    enqueued: list[tuple[str, list[int]]] = []
    parked: list[tuple[str, list[int]]] = []
    old = datetime.now(UTC) - timedelta(minutes=5)
    with tenant_context(tenant):
        Message.objects.filter(id__in=[stranded, poison]).update(state_changed_at=old)
        Message.objects.filter(id=poison).update(attempts=10)
    handler = sweeper.SweepHandler(
        direction="inbound",
        state="received",
        enqueue=lambda t, ids: enqueued.append((t, ids)),
        park=lambda t, ids: parked.append((t, ids)),
        max_attempts=10,
    )
    saved = dict(sweeper._HANDLERS)
    sweeper._HANDLERS.clear()
    sweeper.register_sweep_handler(handler)
    try:
        with transaction.atomic():
            report = sweeper.sweep_tenant(tenant_id=tenant, grace_seconds=60)
            # run the on-commit enqueue as the real commit would
            for _, callback, _ in connection.run_on_commit:
                callback()
            connection.run_on_commit.clear()
        assert report.enqueued == {"inbound/received": 1}
        assert enqueued == [(str(tenant), [stranded])]
        assert parked == [(str(tenant), [poison])]
        again = sweeper.sweep_tenant(tenant_id=tenant, grace_seconds=60)
        assert again.enqueued == {}  # swept within the grace period: left alone
        assert fresh not in enqueued[0][1]
    finally:
        sweeper._HANDLERS.clear()
        sweeper._HANDLERS.update(saved)


def test_store_rows_land_in_monthly_partitions_reachable_only_through_the_parent(world) -> None:
    stored = _store(world, "T-1")
    partition = f"messaging_message_p{datetime.now(UTC):%Y%m}"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'messaging_message'::regclass"
        )
        assert cursor.fetchone()[0] >= 5  # last month, this month and three ahead
    with tenant_context(world.acme.id), connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM messaging_message WHERE id = %s",
            [stored.message_ids[0]],
        )
        assert cursor.fetchone()[0] == partition
    with pytest.raises(ProgrammingError, match="permission denied"), connection.cursor() as c:
        c.execute(f"SELECT count(*) FROM {partition}")


def test_ensure_partitions_is_idempotent_and_bounded(world) -> None:
    with transaction.atomic():
        assert services.ensure_partitions(months_ahead=3) == 0
    with pytest.raises(DatabaseError, match="between 0 and 24"), transaction.atomic():
        services.ensure_partitions(months_ahead=500)


def test_every_raw_partition_keeps_rows_of_a_page_whole_and_new_ones_too(world) -> None:
    """Migration 0024: every partition of the raw table, those it found and those the partition
    function makes later, stores a row of up to a page whole instead of toasting it at 2 KB; the
    other tables' partitions keep PostgreSQL's default. (The partitions made here go with the
    test's transaction.)"""
    partitions = (
        "SELECT c.relname, i.inhparent::regclass::text, c.reloptions FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = ANY(ARRAY['messaging_raw',"
        " 'messaging_message', 'messaging_transition', 'messaging_finding']::regclass[])"
    )
    with connection.cursor() as cursor:
        cursor.execute(partitions)
        existing = cursor.fetchall()
        assert services.ensure_partitions(months_ahead=6) == 4 * 3  # three more months each
        cursor.execute(partitions)
        every = cursor.fetchall()
    assert len(every) == len(existing) + 12
    options = {(table, tuple(reloptions or ())) for _name, table, reloptions in every}
    assert options == {
        ("messaging_raw", ("toast_tuple_target=8160",)),
        ("messaging_message", ()),
        ("messaging_transition", ()),
        ("messaging_finding", ()),
    }


def test_outbound_messages_get_final_bytes_once(world) -> None:
    with tenant_context(world.globex.id):
        conn = Connection.objects.get()
        channel = Channel.objects.get(connection=conn)
        source_raw, ids = services.store_outbound_messages(
            tenant_id=world.globex.id,
            connection_id=conn.id,
            channel_id=channel.id,
            source_body=b'{"messages": []}',
            headers={"Idempotency-Key": "k1"},
            messages=[
                services.OutboundMessageFacts(interface_id="IF-021", mpan="2000056535971"),
                services.OutboundMessageFacts(interface_id="IF-021", mpan="1900012374324"),
            ],
        )
        assert [m.state for m in Message.objects.filter(id__in=ids)] == ["accepted", "accepted"]
        payloads = [
            (ids[0], b'{"a":1}', "S-021-AAAAAAAAAA-SDS-20261129-1"),
            (ids[1], b'{"b":2}', "S-2"),
        ]
        raw_id = services.attach_payloads(
            tenant_id=world.globex.id,
            connection_id=conn.id,
            channel_id=channel.id,
            payloads=payloads,
        )
        second = Message.objects.get(id=ids[1])
        assert second.raw_id == raw_id
        assert second.source_raw_id == source_raw
        assert services.message_bytes(second) == b'{"b":2}'
        assert services.set_transaction_ids(tenant_id=world.globex.id, pairs=[(ids[0], "T-9")]) == 1
        moved = services.transition(
            tenant_id=world.globex.id,
            message_ids=ids,
            from_state="accepted",
            to_state="ready",
            actor="enricher",
            direction="outbound",
        )
        assert moved == sorted(ids)
        assert Transition.objects.filter(message_id__in=ids).count() == 2
    with (
        pytest.raises(DatabaseError, match="raw_id is written once"),
        tenant_context(world.globex.id),
    ):
        services.attach_payloads(
            tenant_id=world.globex.id,
            connection_id=conn.id,
            channel_id=channel.id,
            payloads=[(ids[0], b"{}", "S-3")],
        )
