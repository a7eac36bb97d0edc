"""The raw-PostgreSQL baseline every Busbar benchmark is measured against, in the same run.

It stores the same message bytes the benchmark moves (real generated DIP messages, distinct, each
row one of them in turn), in the plainest durable way PostgreSQL offers: ``INSERT`` of one text
column per message, committed (synchronous commit on), either in batches of 100 rows from one
client or one row per transaction from 16 clients. A figure of Busbar's is then printed as a
ratio to it, so results compare across machines and runs.

With ``repeat`` above one each figure is the best of that many measurements: on a shared machine
a single short measurement can land in a slow moment and make every ratio look better than it
is, while the best of three can only make them look worse.

    .venv/bin/python bench/pg_baseline.py --rows 10000     # prints both baselines
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@dataclass(frozen=True)
class Baseline:
    batched_rows_per_second: float  # batches of ``batch`` rows, one client
    single_rows_per_second: float  # one row per transaction, ``clients`` clients
    batch: int
    clients: int


def _table(conn: psycopg.Connection) -> str:
    name = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE TABLE {name} (id bigserial PRIMARY KEY, body text NOT NULL)")
    return name


def measure(
    *,
    conninfo: str,
    bodies: Sequence[str],
    rows: int,
    batch: int = 100,
    clients: int = 16,
    repeat: int = 1,
) -> Baseline:
    """Insert ``rows`` rows, the ``bodies`` in turn, both ways and return the rates (the table
    is dropped); each the best of ``repeat`` measurements."""
    if not bodies:
        raise ValueError("the baseline needs the benchmark's messages")
    batched, single = 0.0, 0.0
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("SET synchronous_commit = on")
        table = _table(admin)
        try:
            for _ in range(max(1, repeat)):
                batched = max(batched, _batched(conninfo, table, bodies, rows, batch))
                single = max(single, _single(conninfo, table, bodies, rows, clients))
        finally:
            admin.execute(f"DROP TABLE IF EXISTS {table}")
    return Baseline(batched, single, batch, clients)


def _batched(conninfo: str, table: str, bodies: Sequence[str], rows: int, batch: int) -> float:
    with psycopg.connect(conninfo) as conn:
        started = time.perf_counter()
        for first in range(0, rows, batch):
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {table} (body) VALUES (%s)",
                    [(bodies[n % len(bodies)],) for n in range(first, first + batch)],
                )
        return rows / (time.perf_counter() - started)


def _single(conninfo: str, table: str, bodies: Sequence[str], rows: int, clients: int) -> float:
    per_client = max(1, rows // clients // 4)

    def client(offset: int) -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for n in range(per_client):
                body = bodies[(offset + n) % len(bodies)]
                conn.execute(f"INSERT INTO {table} (body) VALUES (%s)", (body,))

    threads = [threading.Thread(target=client, args=(c * per_client,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per_client * clients / (time.perf_counter() - started)


def if021_messages(count: int) -> list[str]:
    """``count`` distinct real IF-021 messages as the DIP pushes them (``{"payload": ...}``)."""
    from bench.dipsim_bench import make_payloads

    return [
        json.dumps({"payload": payload}, separators=(",", ":"))
        for payload in make_payloads(count, seed=7)
    ]


def describe(baseline: Baseline) -> str:
    return (
        f"raw PostgreSQL: {baseline.batched_rows_per_second:,.0f} rows/s in batches of"
        f" {baseline.batch}; {baseline.single_rows_per_second:,.0f} single-row commits/s from"
        f" {baseline.clients} clients"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--conninfo", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_CONNINFO)
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of this many")
    args = parser.parse_args()
    bodies = if021_messages(1_000)
    print(
        describe(measure(conninfo=args.conninfo, bodies=bodies, rows=args.rows, repeat=args.repeat))
    )


if __name__ == "__main__":
    main()
