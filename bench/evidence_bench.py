"""How much memory an evidence pack costs to build, and whether it stays bounded as traffic grows.

It builds its own database (``busbar_bench_evidence``, dropped and recreated), stores real
generated IF-021 messages for one tenant in deliveries of 100 exactly as the webhook does (one
compressed blob per delivery, narrow message rows), moves each message once on its timeline, seals
the ledger, then generates the pack in a fresh child process and reads that process's peak resident
memory. It does this for each size given, so the figures show whether memory grows with the
period's traffic (it should not: every record set is streamed to the ZIP on disk).

    .venv/bin/python bench/evidence_bench.py --messages 50000 200000

The raw-PostgreSQL baseline of the same bytes (``pg_baseline``) is printed beside the store's own
receipt rate, as every Busbar benchmark does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import pg_baseline  # noqa: E402
from bench.dipsim_bench import make_payloads  # noqa: E402
from core import devenv  # noqa: E402

DATABASE = "busbar_bench_evidence"


def _setup_environment() -> str:
    services, env = devenv.prepare(dbname=DATABASE)
    devenv.bootstrap_database(services.admin_conninfo, DATABASE, drop=True)
    os.environ.update(env)
    os.environ["BUSBAR_EVIDENCE_SETTLE_SECONDS"] = "0"
    os.environ["BUSBAR_EVIDENCE_DIR"] = str(REPO / "var" / "bench-evidence")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", database="owner", verbosity=0, interactive=False)
    return services.admin_conninfo


def _seed(count: int, bodies: list[bytes]) -> tuple[str, float]:
    """A tenant with ``count`` inbound IF-021 messages; returns its id and the receipt rate."""
    from core.tenancy import tenant_context
    from messaging.store import services as store
    from tenants import services

    tenant = services.create_tenant(slug=f"bench{count}", name=f"Bench {count}")
    with tenant_context(tenant.id):
        identity = services.create_identity(
            mpid="BNCH", role_code="SUP", dip_id=f"{count % 10**10:010d}"
        )
        connection = services.create_connection(
            identity=identity, environment="UIT", dip_base_url="https://dip.example", api_key="k"
        )
        channel = services.create_channel(
            connection=connection, interface_id="IF-021", direction="inbound"
        )
    started = time.perf_counter()
    for first in range(0, count, 100):
        items = [bodies[(first + n) % len(bodies)] for n in range(min(100, count - first))]
        body = b"[" + b",".join(items) + b"]"
        facts, position = [], 1
        for n, item in enumerate(items):
            facts.append(
                store.InboundMessageFacts(
                    offset=position,
                    length=len(item),
                    sha256=hashlib.sha256(item).digest(),
                    transaction_id=f"T-IF-021-{first + n:016d}",
                    interface_id="IF-021",
                )
            )
            position += len(item) + 1
        with tenant_context(tenant.id):
            stored = store.store_inbound_delivery(
                tenant_id=tenant.id,
                connection_id=connection.id,
                channel_id=channel.id,
                body=body,
                headers={},
                messages=facts,
            )
            store.transition(
                tenant_id=tenant.id,
                message_ids=stored.message_ids,
                from_state="received",
                to_state="valid",
                actor="bench",
            )
    rate = count / (time.perf_counter() - started)
    from messaging.evidence import ledger

    with tenant_context(tenant.id):
        while ledger.seal_until_current(tenant_id=tenant.id, max_seals=100):
            pass
    return str(tenant.id), rate


def _generate(tenant_id: str, queue: multiprocessing.Queue) -> None:
    """In a fresh process: build one pack, report its facts and this process's peak memory."""
    import django

    django.setup()
    from datetime import UTC, datetime, timedelta

    from core.tenancy import tenant_context
    from messaging.evidence import packs
    from messaging.models import EvidencePack

    with tenant_context(tenant_id):
        pack = EvidencePack.objects.create(
            requested_by="bench",
            period_from=datetime.now(UTC) - timedelta(days=1),
            period_to=datetime.now(UTC),
            include_payloads=True,
        )
    started = time.perf_counter()
    done = packs.generate_pack(tenant_id=tenant_id, pack_id=pack.id)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {
            "messages": done.message_count if done else None,
            "state": done.state if done else "failed",
            "bytes": done.size if done else None,
            "seconds": round(seconds, 1),
            "peak_mib": round(peak_kib / 1024, 1),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[50_000, 200_000])
    args = parser.parse_args()
    admin = _setup_environment()
    payloads = make_payloads(1000)
    bodies = [json.dumps({"payload": p}, separators=(",", ":")).encode() for p in payloads]
    baseline = pg_baseline.measure(
        conninfo=admin, body=bodies[0].decode(), rows=min(20_000, max(args.messages))
    )
    print(
        f"raw PostgreSQL: {baseline.batched_rows_per_second:,.0f} rows/s in batches of 100"
        f" ({len(bodies[0]):,} byte IF-021 messages)"
    )
    results = []
    context = multiprocessing.get_context("spawn")
    for count in args.messages:
        print(f"seeding {count:,} messages…", flush=True)
        tenant_id, rate = _seed(count, bodies)
        print(
            f"  stored at {rate:,.0f} msg/s with one transition each"
            f" ({rate / baseline.batched_rows_per_second:.2f} of raw batched inserts)"
        )
        queue: multiprocessing.Queue = context.Queue()
        child = context.Process(target=_generate, args=(tenant_id, queue))
        child.start()
        child.join()
        result = queue.get(timeout=5)
        results.append((count, result))
        print(
            f"  pack: {result['state']}, {result['messages']:,} messages,"
            f" {result['bytes'] / 1e6:,.1f} MB in {result['seconds']} s,"
            f" peak memory {result['peak_mib']} MiB",
            flush=True,
        )
    if len(results) > 1:
        (small, a), (large, b) = results[0], results[-1]
        print(
            f"peak memory at {large:,} vs {small:,} messages: {b['peak_mib'] / a['peak_mib']:.2f}x"
            f" for {large / small:.0f}x the messages"
        )


if __name__ == "__main__":
    main()
