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
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import pg_baseline  # noqa: E402
from bench.dipsim_bench import make_payloads  # noqa: E402
from core import devenv  # noqa: E402

DATABASE = "busbar_bench_evidence"
SEAL_EVERY = 20  # deliveries: about 4,000 ledger entries, under one seal's 5,000


def _setup_environment(*, reuse: bool) -> str:
    services, env = devenv.prepare(dbname=DATABASE)
    devenv.bootstrap_database(services.admin_conninfo, DATABASE, drop=not reuse)
    os.environ.update(env)
    os.environ["BUSBAR_EVIDENCE_SETTLE_SECONDS"] = "0"
    os.environ["BUSBAR_EVIDENCE_DIR"] = str(REPO / "var" / "bench-evidence")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", database="owner", verbosity=0, interactive=False)
    return services.admin_conninfo


def _seeded(count: int) -> str | None:
    """The tenant a previous run seeded with ``count`` messages, if there is one."""
    from core.tenancy import tenant_context
    from messaging.models import Message
    from tenants.models import Tenant

    tenant_id = _tenant_id(count)
    with tenant_context(tenant_id):
        if not Tenant.objects.filter(id=tenant_id).exists():
            return None
        stored = Message.objects.count()
    if stored != count:
        raise SystemExit(
            f"tenant bench{count} holds {stored:,} messages, not {count:,} (an interrupted"
            " seeding): run without --reuse to start from an empty database"
        )
    return str(tenant_id)


def _tenant_id(count: int) -> uuid.UUID:
    """A fixed id per size, so a later run finds the tenant under RLS."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"https://busbar.example/bench/evidence/{count}")


def _seed(count: int, bodies: list[bytes]) -> tuple[str, float]:
    """A tenant with ``count`` inbound IF-021 messages; returns its id and the receipt rate."""
    from core.tenancy import tenant_context
    from messaging.store import services as store
    from tenants import services

    tenant = services.create_tenant(
        slug=f"bench{count}", name=f"Bench {count}", tenant_id=_tenant_id(count)
    )
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
    storing = 0.0  # seconds spent storing, not sealing (the receipt rate is the store's)
    for first in range(0, count, 100):
        started = time.perf_counter()
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
        storing += time.perf_counter() - started
        if first // 100 % SEAL_EVERY == SEAL_EVERY - 1:
            _seal(tenant.id)
    _seal(tenant.id)
    return str(tenant.id), count / storing


def _seal(tenant_id: uuid.UUID) -> None:
    """Seal what has been stored, as the beat task does while traffic flows. Sealing everything
    at the end instead costs time quadratic in the traffic: each seal reads its whole unsealed
    window before cutting it at 5,000 entries."""
    from core.tenancy import tenant_context
    from messaging.evidence import ledger

    with tenant_context(tenant_id):
        while ledger.seal_until_current(tenant_id=tenant_id, max_seals=100):
            pass


def _peak_mib() -> float:
    """This process's own peak resident memory. Not ``ru_maxrss``: Linux carries that across
    exec, so a child started by fork and exec reports the parent's peak when it is higher (the
    parent here has just seeded the database, and grows with the number of messages)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
    # The peak so far each time the builder reports a new stage: the stage that raised the peak
    # is the one whose figure grows with the traffic.
    stages: list[tuple[str, float]] = []
    report = packs._progress

    def _progress(pack: EvidencePack, percent: int, stage: str) -> None:
        stages.append((stage, _peak_mib()))
        report(pack, percent, stage)

    packs._progress = _progress
    started = time.perf_counter()
    done = packs.generate_pack(tenant_id=tenant_id, pack_id=pack.id)
    seconds = time.perf_counter() - started
    stages.append(("end", _peak_mib()))
    queue.put(
        {
            "messages": done.message_count if done else None,
            "state": done.state if done else "failed",
            "bytes": done.size if done else None,
            "seconds": round(seconds, 1),
            "peak_mib": stages[-1][1],
            "peak_before_stage": stages,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database of an earlier run and its seeded tenants (measure the pack again)",
    )
    args = parser.parse_args()
    admin = _setup_environment(reuse=args.reuse)
    payloads = make_payloads(1000)
    bodies = [json.dumps({"payload": p}, separators=(",", ":")).encode() for p in payloads]
    baseline = pg_baseline.measure(
        conninfo=admin,
        bodies=[body.decode() for body in bodies],
        rows=min(20_000, max(args.messages)),
        repeat=3,
    )
    print(
        f"raw PostgreSQL: {baseline.batched_rows_per_second:,.0f} rows/s in batches of 100"
        f" ({len(bodies[0]):,} byte IF-021 messages)"
    )
    results = []
    context = multiprocessing.get_context("spawn")
    for count in args.messages:
        tenant_id = _seeded(count) if args.reuse else None
        if tenant_id is None:
            print(f"seeding {count:,} messages…", flush=True)
            tenant_id, rate = _seed(count, bodies)
            print(
                f"  stored at {rate:,.0f} msg/s with one transition each"
                f" ({rate / baseline.batched_rows_per_second:.2f} of raw batched inserts)"
            )
        else:
            print(f"{count:,} messages already stored by an earlier run", flush=True)
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
        print(
            "  peak before each stage (MiB): "
            + ", ".join(f"{stage} {mib}" for stage, mib in result["peak_before_stage"]),
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
