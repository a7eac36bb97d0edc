"""How fast the console's overview and a filtered message search answer with 1 and 10 million
stored messages, and whether they slow down as the store grows (they should not: the overview
reads rollups, the searches walk indexes led by tenant_id).

It builds its own database (``busbar_bench_console``, dropped and recreated), one tenant with two
connections and twelve channels, and seeds messages straight into the partitioned message table
with ``generate_series`` (realistic rows: both directions, six interfaces, 200,000 MPANs, sender
references, transaction and correlation ids, mostly end states with some failures, rejections and
a backlog, spread over the last 30 days). The rollups are written by the same statement that
inserts each chunk (a data-modifying CTE), as the store's own statements keep them. The message
table's secondary indexes are dropped for the seed and made again afterwards by the migrations'
own statements (one sorted build per partition), and the catalogue's indexes are checked to be
the migrated ones. Then it signs a message operator in and times full page renders through
Django (view, selectors, template):

- ``overview``: ``GET /`` (flow health, charts, exceptions summary);
- ``fragment``: the htmx refresh of the overview;
- ``search mpan``: ``GET /messages/?q=<an MPAN>`` (its messages grow with the store: 5 at one
  million, a full page of 50 at ten);
- ``search reference``: ``GET /messages/?q=<a sender reference>`` (one message at any size);
- ``search filtered``: interface + event code + state + a 7-day date range;
- ``search state``: the newest rejected messages.

Each figure is the median of ``--repeat`` renders after one warm-up. Printed, never asserted:

    .venv/bin/python bench/console_bench.py --messages 1000000 10000000

Seeding is untimed and long (ten million rows take some ten minutes), so it can be done apart,
outside the benchmark lock, into databases that are kept, and the pages timed afterwards, the two
sizes one after the other (each database named twice evens out a machine whose load drifts):

    .venv/bin/python bench/console_bench.py --seed-only --messages 1000000 --database bench_1m
    .venv/bin/python bench/console_bench.py --seed-only --messages 10000000 --database bench_10m
    .venv/bin/python bench/console_bench.py --measure-only --database bench_1m bench_10m bench_1m bench_10m

The raw-PostgreSQL baseline (``pg_baseline``) is printed beside, as every Busbar benchmark does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import pg_baseline  # noqa: E402
from core import devenv  # noqa: E402

DATABASE = "busbar_bench_console"
CHUNK = 1_000_000
INTERFACES = [
    ("inbound", "IF-021", "D0010"),
    ("inbound", "IF-033", "D0150"),
    ("inbound", "IF-036", "D0086"),
    ("outbound", "IF-019", "D0155"),
    ("outbound", "IF-004", "D0205"),
    ("outbound", "IF-041", "D0302"),
]
PASSWORD = "bench-operator-password"


def _setup_environment(database: str, *, fresh: bool = True) -> str:
    services, env = devenv.prepare(dbname=database)
    if fresh:
        devenv.bootstrap_database(services.admin_conninfo, database, drop=True)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", database="owner", verbosity=0, interactive=False)
    return services.admin_conninfo


def _tenant() -> tuple[str, list[int], dict[tuple[int, str, str], int]]:
    """The bench tenant, its operator, connections and channels."""
    from datetime import timedelta

    from core.tenancy import tenant_context
    from tenants import services
    from tenants.models import Role

    tenant = services.create_tenant(slug="bench", name="Bench Energy")
    channels: dict[tuple[int, str, str], int] = {}
    with tenant_context(tenant.id):
        services.create_user(
            username="oper",
            email="oper@bench.example",
            password=PASSWORD,
            roles=[Role.MESSAGE_OPERATOR, Role.TENANT_ADMIN],
        )
        connections = []
        for n, environment in enumerate(["UIT", "PRD"]):
            identity = services.create_identity(
                mpid="BNC" + "AB"[n], role_code="SUP", dip_id=f"{1000000100 + n}"
            )
            connection = services.create_connection(
                identity=identity,
                environment=environment,
                dip_base_url="https://dip.example",
                api_key="k",
            )
            connections.append(connection.id)
            for direction, interface, _ in INTERFACES:
                channel = services.create_channel(
                    connection=connection, interface_id=interface, direction=direction
                )
                channel.expected_cadence = timedelta(hours=1)
                channel.save()
                channels[connection.id, interface, direction] = channel.id
    return str(tenant.id), connections, channels


SEED_SQL = """
WITH input AS (
    SELECT g,
           (%(start_ms)s + (g - %(origin)s) * %(step_ms)s)::bigint AS ms,
           (g %% 6) AS k,
           (g %% 2) AS c,
           (g * 7919 %% 200000) AS mpan_no,
           (g * 104729 %% 1000) AS fate
    FROM generate_series(%(first)s::bigint, %(last)s::bigint - 1) AS g
), rows AS (
    SELECT i.g, ((i.ms - %(epoch_ms)s) << 20) | (i.g %% 1048576) AS id,
           to_timestamp(i.ms / 1000.0) AS created_at,
           (%(conns)s::bigint[])[i.c + 1] AS connection_id,
           (%(dirs)s::text[])[i.k + 1] AS direction,
           (%(ifaces)s::text[])[i.k + 1] AS interface_id,
           (%(events)s::text[])[i.k + 1] AS event_code,
           lpad((1900000000000 + i.mpan_no * 37)::text, 13, '0') AS mpan,
           i.fate
    FROM input i
), shaped AS (
    SELECT r.*,
        CASE WHEN r.direction = 'inbound' THEN
            CASE WHEN r.fate < 20 THEN 'invalid' WHEN r.fate < 23 THEN 'failed'
                 WHEN r.fate < 25 AND r.created_at > now() - interval '10 minutes' THEN 'received'
                 ELSE 'delivered' END
        ELSE
            CASE WHEN r.fate < 15 THEN 'rejected' WHEN r.fate < 18 THEN 'failed'
                 WHEN r.fate < 20 THEN 'invalid' WHEN r.fate < 22 THEN 'superseded'
                 WHEN r.fate < 25 AND r.created_at > now() - interval '10 minutes' THEN 'ready'
                 ELSE 'acknowledged' END
        END AS state,
        (100 + r.fate * 7) AS latency_ms
    FROM rows r
), inserted AS (
    INSERT INTO messaging_message (tenant_id, id, direction, connection_id, channel_id,
        interface_id, schema_version, event_code, transaction_id, sender_unique_reference,
        correlation_id, mpan, business_key, created_at, state, attempts, state_changed_at,
        sha256, raw_offset, raw_length)
    SELECT %(tenant)s, s.id, s.direction, s.connection_id,
           (%(channel_map)s::jsonb ->> (s.connection_id || ':' || s.interface_id))::bigint,
           s.interface_id, '2.1.0', s.event_code,
           'T-' || lpad(to_hex(s.id), 16, '0'),
           CASE WHEN s.direction = 'outbound' THEN 'S-BNC-' || s.g ELSE 'DIP-' || s.g END,
           'C-' || (s.g / 3), s.mpan, s.mpan || ':' || s.interface_id,
           s.created_at, s.state, 1, s.created_at + make_interval(secs => s.latency_ms / 1000.0),
           sha256(s.g::text::bytea), 0, 5000
    FROM shaped s
    ON CONFLICT DO NOTHING
    RETURNING connection_id, interface_id, direction, created_at, state, id
), steps AS (
    SELECT connection_id, interface_id, direction,
           date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           st.state, st.age, (id %% 8)::smallint AS shard
    FROM inserted CROSS JOIN LATERAL (
        VALUES (CASE WHEN direction = 'inbound' THEN 'received' ELSE 'accepted' END, 0),
               (CASE WHEN state IN ('received', 'ready') THEN NULL ELSE state END,
                100 + (id %% 1000) * 7)
    ) AS st(state, age)
    WHERE st.state IS NOT NULL
), rolled AS (
    INSERT INTO messaging_flow_rollup AS r
        (tenant_id, connection_id, interface_id, direction, hour, state, shard, entered,
         age_ms_sum)
    SELECT %(tenant)s, connection_id, interface_id, direction, hour, state, shard, count(*),
           sum(age)
    FROM steps GROUP BY 2, 3, 4, 5, 6, 7
    ON CONFLICT (tenant_id, connection_id, interface_id, direction, hour, state, shard)
    DO UPDATE SET entered = r.entered + EXCLUDED.entered,
                  age_ms_sum = r.age_ms_sum + EXCLUDED.age_ms_sum
), coded AS (
    INSERT INTO messaging_code_rollup AS k
        (tenant_id, connection_id, interface_id, direction, hour, kind, stage, code, shard, count)
    SELECT %(tenant)s, connection_id, interface_id, direction,
           date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           CASE WHEN state = 'rejected' THEN 'rejection' ELSE 'finding' END,
           CASE WHEN state = 'rejected' THEN '' ELSE 'semantic' END,
           CASE WHEN state = 'rejected' THEN 'MSG00' || (10 + id %% 5) ELSE 'SEM-0' || (id %% 3) END,
           (id %% 8)::smallint, count(*)
    FROM inserted WHERE state IN ('rejected', 'invalid')
    GROUP BY 2, 3, 4, 5, 6, 7, 8, 9
    ON CONFLICT (tenant_id, connection_id, interface_id, direction, hour, kind, stage, code, shard)
    DO UPDATE SET count = k.count + EXCLUDED.count
), counted AS (
    INSERT INTO messaging_state_count AS c
        (tenant_id, connection_id, interface_id, direction, state, shard, count)
    SELECT %(tenant)s, connection_id, interface_id, direction, state, (id %% 8)::smallint, count(*)
    FROM inserted GROUP BY 2, 3, 4, 5, 6
    ON CONFLICT (tenant_id, connection_id, interface_id, direction, state, shard)
    DO UPDATE SET count = c.count + EXCLUDED.count
)
SELECT count(*) FROM inserted
"""


def _index_snapshot(conn: Any) -> list[tuple[Any, ...]]:
    """Every index of the schema as the catalogue describes it: name, table, definition, whether
    it is valid, and the partitioned index it is attached to (so a rebuild can be checked to have
    left exactly what the migrations made)."""
    return conn.execute(
        """
        SELECT t.relname, i.relname, pg_get_indexdef(i.oid), x.indisvalid, x.indisready,
               parent.relname
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = i.relnamespace AND n.nspname = 'public'
        LEFT JOIN pg_inherits h ON h.inhrelid = i.oid
        LEFT JOIN pg_class parent ON parent.oid = h.inhparent
        ORDER BY 1, 2
        """
    ).fetchall()


def _migrated_message_indexes() -> dict[str, str]:
    """Each index the messaging migrations create on the message table, by name, with the very
    statement they run (the catalogue's own rendering of a definition does not always read back
    to the same text, so a rebuild from it would not be the migrated schema)."""
    import re

    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.operations.special import RunSQL, SeparateDatabaseAndState

    creates = re.compile(r"\s*CREATE INDEX (\w+) ON messaging_message\b")
    loader = MigrationLoader(None, ignore_no_migrations=True)
    statements: dict[str, str] = {}

    def collect(operations: Sequence[Any]) -> None:
        for operation in operations:
            if isinstance(operation, SeparateDatabaseAndState):
                collect(operation.database_operations)
            elif isinstance(operation, RunSQL):
                sqls = [operation.sql] if isinstance(operation.sql, str) else operation.sql
                for statement in sqls:
                    if isinstance(statement, str) and (match := creates.match(statement)):
                        statements[match.group(1)] = statement

    for (app, _), migration in sorted(loader.disk_migrations.items()):
        if app == "messaging":
            collect(migration.operations)
    return statements


def _drop_message_indexes(conn: Any) -> list[tuple[str, str]]:
    """Drop the message table's secondary indexes (every one but the primary key, with their
    indexes on each partition) and return the migrations' statements that make them again, in
    the order they were made."""
    migrated = _migrated_message_indexes()
    names = [
        name
        for (name,) in conn.execute(
            """
            SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = 'public.messaging_message'::regclass AND NOT x.indisprimary
            ORDER BY i.oid
            """
        ).fetchall()
    ]
    unknown = [name for name in names if name not in migrated]
    if unknown:
        raise RuntimeError(f"no migration creates these message indexes: {unknown}")
    for name in names:
        conn.execute(f'DROP INDEX public."{name}"')
    return [(name, migrated[name]) for name in names]


def _rebuild_message_indexes(conn: Any, indexes: list[tuple[str, str]]) -> None:
    """Run the migrations' statements again: each builds its index on every partition in one
    sorted pass, far cheaper than keeping eleven indexes up to date row by row while seeding."""
    conn.execute("SET maintenance_work_mem = '512MB'")
    for _, statement in indexes:
        conn.execute(statement)


def _seed(
    admin: str,
    database: str,
    tenant_id: str,
    connections: list[int],
    channels: dict[tuple[int, str, str], int],
    first: int,
    last: int,
) -> tuple[int, float]:
    """Insert messages ``first`` .. ``last - 1`` (spread over the last 30 days, interleaved with
    earlier ones); returns how many went in and the rows per second."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from messaging.store.ids import ID_EPOCH_MS

    conninfo = make_conninfo(admin, dbname=database)
    now_ms = int(time.time() * 1000)
    span_ms = 30 * 86400 * 1000 - 60_000
    channel_map = json.dumps({f"{c}:{i}": cid for (c, i, _), cid in channels.items()})
    # This batch's rows evenly over the 30 days, half a step off the earlier batch's.
    step = span_ms / (last - first)
    start = now_ms - span_ms - 60_000 + (step / 2 if first else 0)
    stored = 0
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        # The seed's keys are right by construction: skip the per-row foreign-key and write-once
        # triggers (the administrative role may), as a bulk load would.
        conn.execute("SET session_replication_role = replica")
        # The store's secondary indexes are built afterwards, once per partition, rather than
        # maintained row by row: the seed is not what is measured, and the schema it leaves
        # must be exactly the migrated one (checked below).
        before = _index_snapshot(conn)
        dropped = _drop_message_indexes(conn)
        for low in range(first, last, CHUNK):
            high = min(low + CHUNK, last)
            row = conn.execute(
                SEED_SQL,
                {
                    "first": low,
                    "last": high,
                    "origin": first,
                    "start_ms": start,
                    "step_ms": step,
                    "epoch_ms": ID_EPOCH_MS,
                    "conns": connections,
                    "dirs": [d for d, _, _ in INTERFACES],
                    "ifaces": [i for _, i, _ in INTERFACES],
                    "events": [e for _, _, e in INTERFACES],
                    "tenant": tenant_id,
                    "channel_map": channel_map,
                },
            ).fetchone()
            stored += int(row[0]) if row else 0
            print(f"  {high:,} seeded", flush=True)
        inserted = time.perf_counter()
        _rebuild_message_indexes(conn, dropped)
        after = _index_snapshot(conn)
        if after != before:
            changed = sorted(set(before) ^ set(after))
            raise RuntimeError(f"the rebuilt indexes differ from the migrated ones: {changed}")
        print(
            f"  {len(dropped)} indexes rebuilt in {time.perf_counter() - inserted:,.0f} s"
            " (the same names and definitions as migrated)",
            flush=True,
        )
        conn.execute("ANALYZE messaging_message")
        conn.execute("ANALYZE messaging_flow_rollup")
    return stored, stored / (time.perf_counter() - started)


def _stored_messages(admin: str, database: str) -> int:
    """How many messages the bench tenant holds, from its counters (as the overview reads them)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(make_conninfo(admin, dbname=database)) as conn:
        row = conn.execute("SELECT sum(count) FROM messaging_state_count").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _time(client: Any, path: str, repeat: int, **headers: str) -> tuple[float, int]:
    response = client.get(path, **headers)  # warm-up
    assert response.status_code == 200, (path, response.status_code)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, **headers)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, len(response.content)


def _baseline(admin: str) -> pg_baseline.Baseline:
    """The raw-PostgreSQL baseline on real IF-021 messages (a repeated character would compress
    to almost nothing and flatter PostgreSQL)."""
    return pg_baseline.measure(
        conninfo=admin, bodies=pg_baseline.if021_messages(1_000), rows=10_000, repeat=3
    )


def _measure(repeat: int) -> dict[str, float]:
    from django.test import Client

    client = Client()
    assert client.login(username="oper", password=PASSWORD)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    week_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400))
    mpan = f"{1900000000000 + 4242 * 37:013d}"
    pages = {
        "overview": ("/", {}),
        "fragment": ("/", {"HTTP_HX_REQUEST": "true"}),
        "search mpan": (f"/messages/?q={mpan}", {}),
        # One message at any size (an MPAN's messages grow with the store: 5 at 1M, 50 at 10M).
        "search reference": ("/messages/?q=S-BNC-424245", {}),
        "search filtered": (
            f"/messages/?interface=IF-033&event=D0150&state=invalid&from={week_ago}&to={today}",
            {},
        ),
        "search state": ("/messages/?state=rejected", {}),
    }
    results = {}
    for name, (path, headers) in pages.items():
        millis, size = _time(client, path, repeat, **headers)
        results[name] = millis
        print(f"  {name:16} {millis:8.1f} ms  ({size:,} bytes)", flush=True)
    return results


def _measure_databases(databases: list[str], repeat: int) -> None:
    """Time the pages against each seeded database in turn, each in a process of its own (Django
    reads one database), and compare the largest store with the smallest. A database named more
    than once (``a b a b``, to even out a machine whose load drifts) counts with the median of its
    runs."""
    runs: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for database in databases:
        command = [sys.executable, __file__, "--measure-only", "--repeat", str(repeat)]
        run = subprocess.run(
            [*command, "--database", database],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        *shown, last = run.stdout.strip().splitlines()
        print("\n".join(shown), flush=True)
        measured = json.loads(last)
        runs.setdefault(database, []).append((measured["messages"], measured["millis"]))
    results = []
    for measured in runs.values():
        pages = measured[0][1]
        results.append(
            (
                measured[0][0],
                {name: statistics.median(m[name] for _, m in measured) for name in pages},
            )
        )
    _compare(results)


def _compare(results: list[tuple[int, dict[str, float]]]) -> None:
    if len(results) > 1:
        ordered = sorted(results, key=lambda result: result[0])
        (small, a), (large, b) = ordered[0], ordered[-1]
        print(f"at {large:,} vs {small:,} messages:")
        for name in a:
            print(f"  {name:16} {b[name] / a[name]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--database",
        nargs="+",
        default=[DATABASE],
        help="the database to build (dropped and recreated) or, with --measure-only, the ones to"
        " read: several are timed one after the other (each in its own process) and compared",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--seed-only",
        action="store_true",
        help="build and seed the database up to the largest --messages and keep it, untimed"
        " (it can run outside the benchmark lock; --measure-only times it afterwards)",
    )
    mode.add_argument(
        "--measure-only",
        action="store_true",
        help="time the pages against the database an earlier run seeded, as it is",
    )
    args = parser.parse_args()
    if args.measure_only:
        if len(args.database) > 1:
            _measure_databases(args.database, args.repeat)
            return
        admin = _setup_environment(args.database[0], fresh=False)
        print(pg_baseline.describe(_baseline(admin)))
        stored = _stored_messages(admin, args.database[0])
        print(f"at {stored:,} messages (median of {args.repeat}):")
        print(json.dumps({"messages": stored, "millis": _measure(args.repeat)}), flush=True)
        return
    if len(args.database) > 1:
        parser.error("one --database to build at a time")
    database = args.database[0]
    admin = _setup_environment(database)
    baseline = None
    if not args.seed_only:
        baseline = _baseline(admin)
        print(pg_baseline.describe(baseline))
    tenant_id, connections, channels = _tenant()
    targets = [max(args.messages)] if args.seed_only else sorted(args.messages)
    results: list[tuple[int, dict[str, float]]] = []
    seeded = 0
    for target in targets:
        print(f"seeding up to {target:,} messages…", flush=True)
        stored, rate = _seed(admin, database, tenant_id, connections, channels, seeded, target)
        seeded = target
        print(f"  {stored:,} stored at {rate:,.0f} rows/s with their rollups and indexes")
        if baseline is None:
            continue
        print(f"at {target:,} messages (median of {args.repeat}):")
        results.append((target, _measure(args.repeat)))
    _compare(results)


if __name__ == "__main__":
    main()
