"""The inbound worker's round, in-process: stored IF-021 messages to normalised events.

In its own database (``busbar_bench_inbound``, made and dropped here), for one supplier tenant
with an IF-021 channel and an endpoint subscribed to every event (so each event is owed, as in
``e2e_bench.py``; nothing is sent): deliveries of 100 real IF-021 messages (``e2e_bench``'s
generator, about 4.8 KB each) are stored as the webhook stores them, then ``process_round`` runs
rounds of ``--round`` (claim, validation with the tenant's rules, findings and state moves, the
mapping, the events and their deliveries) until every message is normalised. Prints the CPU this
process spent per message, the CPU its PostgreSQL backend spent per message, and the wall-clock
rate, best of ``--repeat`` runs over fresh messages::

    .venv/bin/python bench/inbound_bench.py --messages 2000 --repeat 3     # --profile: py-spy
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e_bench import make_messages  # noqa: E402
from core import devenv  # noqa: E402

DBNAME = "busbar_bench_inbound"
SUPPLIER = "1000000001"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--round", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    services, env = devenv.prepare(dbname=DBNAME)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "core.settings",
            "BUSBAR_DOWNSTREAM_ALLOW": "127.0.0.1:9",
            "BUSBAR_LOG_LEVEL": "WARNING",
        }
    )
    os.environ.update(env)
    devenv.bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], DBNAME, drop=True)

    import django

    django.setup()
    from django.core.management import call_command

    from core.tenancy import tenant_context
    from messaging.events import endpoints
    from messaging.inbound import processing
    from messaging.store import services as store
    from tenants import services as tenants

    call_command("migrate", database="owner", verbosity=0, interactive=False)
    tenant = tenants.create_tenant(slug="bench", name="Bench")
    with tenant_context(tenant.id):
        identity = tenants.create_identity(mpid="BNCH", role_code="SUP", dip_id=SUPPLIER)
        connection = tenants.create_connection(
            identity=identity, environment="UIT", dip_base_url="https://dip.bench", api_key="k"
        )
        channel = tenants.create_channel(
            connection=connection, interface_id="IF-021", direction="inbound"
        )
        endpoints.create_endpoint(
            name="sample",
            url="http://127.0.0.1:9/hooks",
            event_types=["*"],
            actor="bench",
            events_per_request=100,
        )

    def store_messages(run: int) -> None:
        messages = make_messages(args.messages, recipient=SUPPLIER, run=f"r{run}", seed=run)
        for first in range(0, len(messages), 100):
            chunk = messages[first : first + 100]
            body = b"[" + b",".join(chunk) + b"]"
            facts, offset = [], 1
            for raw in chunk:
                common = json.loads(raw)["payload"]["CommonBlock"]
                facts.append(
                    store.InboundMessageFacts(
                        offset=offset,
                        length=len(raw),
                        sha256=hashlib.sha256(raw).digest(),
                        transaction_id=common["D0"]["transactionID"],
                        interface_id="IF-021",
                        schema_version=common["S0"]["schemaVersion"],
                        event_code=common["S0"]["eventCode"],
                        sender_unique_reference=common["S1"]["senderUniqueReference"],
                        mpan=common["M0"]["MPANCore"],
                    )
                )
                offset += len(raw) + 1
            with tenant_context(tenant.id):
                store.store_inbound_delivery(
                    tenant_id=tenant.id,
                    connection_id=connection.id,
                    channel_id=channel.id,
                    body=body,
                    headers={},
                    messages=facts,
                )

    import psutil
    from django.db import connection as db

    def backend_cpu() -> float:
        """CPU seconds of the PostgreSQL backend serving this process's connection."""
        db.ensure_connection()
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system

    results = []
    for run in range(args.repeat):
        store_messages(run)
        normalised = 0
        pg_cpu = backend_cpu()
        started, cpu = time.perf_counter(), time.process_time()
        while True:
            report, claimed = processing.process_round(tenant_id=tenant.id, limit=args.round)
            normalised += len(report.normalised)
            if claimed == 0:
                break
            if report.invalid:
                raise SystemExit(f"{len(report.invalid)} messages refused: check the generator")
        wall, used = time.perf_counter() - started, time.process_time() - cpu
        pg_used = backend_cpu() - pg_cpu
        per = max(normalised, 1)
        results.append((used / per, normalised / wall, pg_used / per))
        print(
            f"run {run + 1}: {normalised} normalised in rounds of {args.round},"
            f" {used / per * 1e6:,.0f} us of CPU per message,"
            f" PostgreSQL {pg_used / per * 1e6:,.0f} us, {normalised / wall:,.0f} messages/s"
        )
    best_cpu = min(r[0] for r in results)
    print(
        f"inbound round: best {best_cpu * 1e6:,.0f} us of CPU per message"
        f" ({1 / best_cpu:,.0f} messages/s of one core),"
        f" PostgreSQL best {min(r[2] for r in results) * 1e6:,.0f} us per message,"
        f" best {max(r[1] for r in results):,.0f} messages/s"
        f" (load average {os.getloadavg()[0]:.1f})"
    )
    from django.db import connections

    for conn in connections.all():
        conn.close()
    devenv.bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], DBNAME, drop=True)
    services.stop()


if __name__ == "__main__":
    main()
