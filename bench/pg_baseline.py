"""The raw-PostgreSQL baseline every Busbar benchmark is measured against, in the same run.

It stores the same message bytes the benchmark moves, in the plainest durable way PostgreSQL
offers: ``INSERT`` of one text column per message, committed (synchronous commit on), either in
batches of 100 rows from one client or one row per transaction from 16 clients. A figure of
Busbar's is then printed as a ratio to it, so results compare across machines and runs.

    .venv/bin/python bench/pg_baseline.py --rows 10000     # prints both baselines
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from dataclasses import dataclass

import psycopg

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
    *, conninfo: str, body: str, rows: int, batch: int = 100, clients: int = 16
) -> Baseline:
    """Insert ``rows`` copies of ``body`` both ways and return the rates (the table is dropped)."""
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("SET synchronous_commit = on")
        table = _table(admin)
        try:
            with psycopg.connect(conninfo) as conn:
                started = time.perf_counter()
                for _ in range(0, rows, batch):
                    with conn.transaction(), conn.cursor() as cursor:
                        cursor.executemany(
                            f"INSERT INTO {table} (body) VALUES (%s)", [(body,)] * batch
                        )
                batched = rows / (time.perf_counter() - started)
            per_client = max(1, rows // clients // 4)

            def client() -> None:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    for _ in range(per_client):
                        conn.execute(f"INSERT INTO {table} (body) VALUES (%s)", (body,))

            threads = [threading.Thread(target=client) for _ in range(clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            single = per_client * clients / (time.perf_counter() - started)
        finally:
            admin.execute(f"DROP TABLE IF EXISTS {table}")
    return Baseline(batched, single, batch, clients)


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
    parser.add_argument("--bytes", type=int, default=4_800, help="size of each row's body")
    args = parser.parse_args()
    print(describe(measure(conninfo=args.conninfo, body="x" * args.bytes, rows=args.rows)))


if __name__ == "__main__":
    main()
