"""The upkeep of fast-written tables by beat (messaging.store.upkeep): a partition filled faster
than autovacuum looks (this suite's server runs with autovacuum off) gets analysed, so the planner
sees the backlog it has to plan for, and vacuumed once its moved messages leave dead versions."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.tenancy import tenant_context
from messaging.store import services, upkeep
from tests.conftest import admin_conninfo, build_world

BACKLOG = 20_000


def _admin() -> psycopg.Connection:
    return psycopg.connect(admin_conninfo(settings.DATABASES["default"]["NAME"]), autocommit=True)


def _received_backlog(admin: psycopg.Connection, tenant_id: object) -> tuple[str, list[int]]:
    """``BACKLOG`` received inbound messages of the tenant, committed; their partition and ids."""
    channel = admin.execute(
        "SELECT id, connection_id FROM tenants_channel WHERE tenant_id = %s LIMIT 1", [tenant_id]
    ).fetchone()
    assert channel is not None
    ids = [
        row[0]
        for row in admin.execute(
            "INSERT INTO messaging_message (tenant_id, direction, connection_id, channel_id,"
            " interface_id, state) SELECT %s, 'inbound', %s, %s, 'IF-021', 'received'"
            " FROM generate_series(1, %s) RETURNING id",
            [tenant_id, channel[1], channel[0], BACKLOG],
        )
    ]
    partition = admin.execute(
        "SELECT tableoid::regclass::text FROM messaging_message WHERE id = %s", [ids[0]]
    ).fetchone()
    assert partition is not None
    # The counters reach pg_stat_user_tables when this backend flushes them (at most a second).
    admin.execute("SELECT pg_stat_force_next_flush()")
    admin.execute("SELECT 1")
    for _ in range(50):
        changed = admin.execute(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = %s",
            [partition[0]],
        ).fetchone()
        if changed and changed[0] >= BACKLOG:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"{partition[0]}'s changes never reached pg_stat_user_tables")
    return partition[0], ids


def _validate(tenant_id: object, ids: list[int]) -> list[int]:
    """Move these received messages on, as a round's validation does; the ids moved."""
    with tenant_context(tenant_id):
        return services.transition(
            tenant_id=tenant_id,
            message_ids=ids,
            from_state="received",
            to_state="valid",
            actor="test",
        )


def _received_expected(admin: psycopg.Connection, tenant_id: object) -> int:
    """How many of the tenant's messages PostgreSQL expects to be waiting in ``received``."""
    row = admin.execute(
        "EXPLAIN (FORMAT JSON) SELECT id FROM messaging_message"
        " WHERE tenant_id = %s AND state = 'received'",
        [tenant_id],
    ).fetchone()
    assert row is not None
    return int(row[0][0]["Plan"]["Plan Rows"])


def test_a_partition_filled_fast_is_analysed_and_its_backlog_then_seen(committed_db) -> None:
    world = build_world()
    with _admin() as admin:
        partition, _ = _received_backlog(admin, world.acme.id)
        # As for a partition never analysed, whatever ran before this test.
        admin.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass", [partition])
        # Unanalysed, a state and a tenant are each guessed to hold 0.5% of the rows: a backlog
        # of 20,000 looks like a handful, and plans made for a handful walk all of it.
        assert _received_expected(admin, world.acme.id) < BACKLOG // 100

        report = upkeep.keep_tables()

        assert partition in report.analysed
        analysed_at = admin.execute(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = %s", [partition]
        ).fetchone()
        assert analysed_at is not None
        assert analysed_at[0] is not None
        assert _received_expected(admin, world.acme.id) > BACKLOG // 2

        # Analysed, its changes start again from nothing: the next run leaves it alone.
        assert partition not in upkeep.keep_tables().analysed


def test_a_table_that_changed_little_is_left_alone(committed_db) -> None:
    build_world()  # a few rows in each of the tenancy tables, far below the threshold
    assert "tenants_tenant" not in upkeep.keep_tables().analysed


def _scans(plan: dict) -> list[str]:
    """Each scan of the plan, as "node type on relation/index"."""
    found = []
    if "Relation Name" in plan or "Index Name" in plan:
        where = "/".join(filter(None, (plan.get("Relation Name"), plan.get("Index Name"))))
        found.append(f"{plan['Node Type']} on {where}")
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


@pytest.mark.parametrize("analysed", [False, True])
def test_a_state_move_never_walks_the_messages_in_its_state(committed_db, analysed: bool) -> None:
    """The move names its messages by key; the state index must not be how it finds them, or a
    round costs as much as the backlog it is drawn from (statistics or none)."""
    world = build_world()
    with _admin() as admin:
        partition, ids = _received_backlog(admin, world.acme.id)
        admin.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass", [partition])
        if analysed:
            upkeep.keep_tables()
        with CaptureQueriesContext(connection) as queries:
            assert len(_validate(world.acme.id, ids[-500:])) == 500
        statement = next(q["sql"] for q in queries.captured_queries if "WITH moved" in q["sql"])
        row = admin.execute("EXPLAIN (FORMAT JSON) " + statement).fetchone()
        assert row is not None
        scans = [s for s in _scans(row[0][0]["Plan"]) if "messaging_message_p" in s]
        assert scans, row[0]
        assert not [s for s in scans if "direction_state" in s], scans


def test_the_dead_versions_left_by_state_moves_are_vacuumed(committed_db) -> None:
    world = build_world()
    with _admin() as admin:
        partition, ids = _received_backlog(admin, world.acme.id)
        upkeep.keep_tables()  # the inserts' analysis, out of the way
        assert len(_validate(world.acme.id, ids)) == BACKLOG
        # The moving backend's counters reach pg_stat_user_tables when it next goes idle, but
        # not within a second of its last flush (then up to ten seconds later): forced here,
        # after the move, so that the flush is the move's own.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")

        def dead() -> int:
            row = admin.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", [partition]
            ).fetchone()
            assert row is not None
            return int(row[0])

        for _ in range(50):  # the moves' counters reach the statistics within a second or so
            if dead() >= BACKLOG:
                break
            time.sleep(0.1)
        assert dead() >= BACKLOG  # one dead version per message moved

        report = upkeep.keep_tables()

        assert partition in report.vacuumed
        assert dead() < BACKLOG // 100
        assert partition not in upkeep.keep_tables().vacuumed
