"""Normalised events: how fast IF-021 messages become events and reach a tenant's system.

In its own database (created, migrated and dropped here), for one tenant with one endpoint (the
sample client system, as its own process on a loopback port):

1. **record**: ``record_events`` over real generated IF-021 messages in batches of 100 (mapping,
   the feed position lock, insert of events and deliveries): messages per second;
2. **deliver**: ``deliver_due`` rounds until every event has reached the sample client, which
   verifies each signature with ``standardwebhooks`` and stores it in SQLite: events per second.

Both print as ratios to the raw-PostgreSQL baseline of the same message bytes in the same run.

    .venv/bin/python bench/events_bench.py --messages 2000
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pstats
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pg_baseline import describe, measure  # noqa: E402
from core import devenv  # noqa: E402
from dipsim import messages as dip  # noqa: E402

DBNAME = "busbar_bench_events"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="print where the time goes")
    parser.add_argument(
        "--per-request", type=int, default=1, help="events per signed request (the endpoint's)"
    )
    parser.add_argument("--round", type=int, default=100, help="deliveries claimed per round")
    args = parser.parse_args()

    services, env = devenv.prepare(dbname=DBNAME)
    port = free_port()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "core.settings",
            "BUSBAR_DOWNSTREAM_ALLOW": f"127.0.0.1:{port}",
            "BUSBAR_LOG_LEVEL": "WARNING",
        }
    )
    os.environ.update(env)
    devenv.bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], DBNAME, drop=True)

    import django

    django.setup()
    from django.core.management import call_command

    from core.tenancy import tenant_context
    from messaging.events import delivery, endpoints
    from messaging.events import services as events
    from messaging.events.signing import generate_secret
    from tenants import services as tenants

    call_command("migrate", database="owner", verbosity=0, interactive=False)
    rng = random.Random(21)
    payloads = [
        dip.if021(sender="1000000002", mpan=dip.make_mpan(rng), day=dt.date(2026, 11, 1), rng=rng)
        for _ in range(args.messages)
    ]
    secret = generate_secret()
    with tempfile.TemporaryDirectory() as scratch:
        client = subprocess.Popen(
            [sys.executable, "-m", "sampleclient", "--port", str(port), "--secret", secret,
             "--db", str(Path(scratch) / "received.sqlite")],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            tenant = tenants.create_tenant(slug="bench", name="Bench")
            with tenant_context(tenant.id):
                endpoints.create_endpoint(
                    name="sample",
                    url=f"http://127.0.0.1:{port}/hooks",
                    event_types=["*"],
                    actor="bench",
                    secret=secret,
                    events_per_request=args.per_request,
                )
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            started, cpu = time.perf_counter(), time.process_time()
            for first in range(0, args.messages, args.batch):
                events.record_events(
                    tenant_id=tenant.id,
                    messages=[
                        (first + n, payload)
                        for n, payload in enumerate(payloads[first : first + args.batch])
                    ],
                )
            recorded = args.messages / (time.perf_counter() - started)
            record_cpu = (time.process_time() - cpu) / args.messages
            started, cpu = time.perf_counter(), time.process_time()
            delivered = 0
            while delivered < args.messages:
                result = delivery.deliver_due(tenant_id=tenant.id, limit=args.round)
                delivered += result.delivered
                if result.claimed == 0:
                    break
            delivering = delivered / (time.perf_counter() - started)
            # This process's CPU (its sending threads included; not the sample client's).
            deliver_cpu = (time.process_time() - cpu) / max(delivered, 1)
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats(
                    os.environ.get("BENCH_SORT", "cumulative")
                ).print_stats(int(os.environ.get("BENCH_LINES", "35")))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json") as response:
                received = json.load(response)["received"]
        finally:
            client.terminate()
            client.wait(10)
    from django.db import connections

    for conn in connections.all():
        conn.close()
    baseline = measure(
        conninfo=env["BUSBAR_ADMIN_DATABASE_URL"],
        bodies=[json.dumps({"payload": payload}) for payload in payloads],
        rows=max(args.messages, 2000),
        repeat=3,
    )
    print(describe(baseline))
    print(
        f"record:  {recorded:,.0f} IF-021 messages/s in batches of {args.batch}"
        f" ({recorded / baseline.batched_rows_per_second:.2f} of the batched baseline),"
        f" {record_cpu * 1e6:,.0f} us of CPU per message"
    )
    print(
        f"deliver: {delivering:,.0f} events/s to one sample client ({args.per_request} per"
        f" request, rounds of {args.round}), {received} verified"
        f" ({delivering / baseline.single_rows_per_second:.2f} of the single-commit baseline),"
        f" {deliver_cpu * 1e6:,.0f} us of CPU per event"
    )
    devenv.bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], DBNAME, drop=True)
    services.stop()


if __name__ == "__main__":
    main()
