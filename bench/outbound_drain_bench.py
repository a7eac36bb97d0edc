"""An outage backlog through Busbar's whole outbound worker path, then the drain to dipsim.

In its own database (created, migrated and dropped here), for one tenant whose smart data service
identity sends IF-021 to a supplier through a dipsim process over mutual TLS:

1. **outage**: dipsim answers 503 to everything; ``--messages`` submissions (default 100,000) are
   accepted (``submit_messages``, as the API does, in requests of 1,000) and prepared by the
   worker (claim, enrich, validate the final bytes against the schema registry, store them);
   the worker's sends fail until the connection's circuit breaker opens.
2. **recovery**: dipsim is back; the probe closes the breaker and ``drain_connection`` sends the
   backlog (claim, sign, mTLS submit in batches of 100, state moves, the ``DipExchange`` evidence
   row per request, the ``outbound.state_changed`` events), printing its progress while it runs
   and its rate over time. The drain's progress is also what the console and the metrics show.
3. **single**: ``--single`` more messages through the same path one per request.

Each phase prints messages per second and, for the sends, the share of this process's CPU spent
signing, as ratios to the raw-PostgreSQL baseline of the same bytes measured in the same run. The
send rate limit is off (``BUSBAR_OUTBOUND_RATE_PER_SECOND=0``) unless ``--rate`` is given: this
measures what the path can do, not the limit.

    .venv/bin/python bench/outbound_drain_bench.py --messages 100000

Prints figures; asserts nothing about them.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import pg_baseline  # noqa: E402
from bench.dipsim_bench import SDS, SUP, free_port, make_payloads, start_dipsim  # noqa: E402
from bench.outbound_bench import SigningMeter  # noqa: E402
from core import devenv  # noqa: E402
from dipsim import pki  # noqa: E402
from dipsim.store import Store  # noqa: E402

DBNAME = "busbar_bench_outbound"
SUBMIT_REQUEST = 1_000  # messages per submission request (the API's batch limit)


def submissions(count: int, seed: int) -> tuple[list[dict], bytes]:
    """``count`` client submissions (what a client system sends) and one full payload's bytes."""
    payloads = make_payloads(min(count, 2_000), seed=seed)
    out = []
    for i in range(count):
        payload = payloads[i % len(payloads)]
        m0 = payload["CommonBlock"]["M0"]
        out.append(
            {
                "event_code": "ActivePower",
                "custom_block": payload["CustomBlock"],
                "primary_recipients": [SUP],
                "mpan": m0["MPANCore"],
                "distributor_dip_id": m0["distributorDIPID"],
                "gsp_group_id": m0["GSPGroupID"],
                "correlation_id": f"bench-{i}",
                "urgency": "urgent" if i % 50 == 0 else "normal",
            }
        )
    return out, json.dumps(payloads[0], separators=(",", ":")).encode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=0, help="messages/s limit (0: off)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument("--profile", action="store_true", help="print where the worker's time goes")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="requests of the connection in flight at once while draining (default: the"
        " worker's DRAIN_IN_FLIGHT; 1 sends one batch after another)",
    )
    parser.add_argument(
        "--chunk", type=int, default=None, help="messages per drain chunk (default: DRAIN_CHUNK)"
    )
    args = parser.parse_args()

    services, env = devenv.prepare(dbname=DBNAME)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "core.settings",
            "BUSBAR_LOG_LEVEL": "WARNING",
            "BUSBAR_OUTBOUND_RATE_PER_SECOND": str(args.rate),
        }
    )
    os.environ.update(env)
    devenv.bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], DBNAME, drop=True)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", database="owner", verbosity=0, interactive=False)

    from core.tenancy import tenant_context
    from messaging import tasks
    from messaging.models import DipExchange, Message
    from messaging.outbound import breaker
    from messaging.outbound import services as outbound
    from tenants import certificates
    from tenants import services as tenants

    if args.in_flight is not None:
        outbound.DRAIN_IN_FLIGHT = args.in_flight
    if args.chunk is not None:
        outbound.DRAIN_CHUNK = args.chunk
    print(
        f"drain: {outbound.DRAIN_IN_FLIGHT} request(s) in flight, chunks of {outbound.DRAIN_CHUNK}"
    )
    # The bench runs the workers' steps itself: nothing is handed to a broker.
    tasks.prepare_outbound_task.delay_on_commit = lambda *args: None

    work = Path(tempfile.mkdtemp(prefix="outbound-drain-bench-"))
    ca, data, creds = work / "ca", work / "data", work / "creds"
    pki.init_ca(ca)
    pki.issue_to_files(ca, dip_ids=[SDS], kind="mtls", out=creds / "sds-mtls")
    pki.issue_to_files(ca, dip_ids=[SDS], kind="signing", out=creds / "sds-sign")
    store = Store(data)
    store.upsert_participant(dip_id=SUP, mpid="ACME", role="SUP", api_key="key-sup")
    store.upsert_participant(dip_id=SDS, mpid="SDSB", role="SDS", api_key="key-sds")
    store.close()
    port, admin_port = free_port(), free_port()
    process = start_dipsim(data, ca, port, admin_port, [])
    admin = f"http://127.0.0.1:{admin_port}"
    total = args.messages + args.single
    items, sample = submissions(total, seed=int(time.time()))
    print(
        f"IF-021 message size: {len(sample)} bytes; CPUs: {len(os.sched_getaffinity(0))};"
        f" load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    try:
        tenant = tenants.create_tenant(slug="bench", name="Bench")
        with tenant_context(tenant.id):
            identity = tenants.create_identity(mpid="SDSB", role_code="SDS", dip_id=SDS)
            connection = tenants.create_connection(
                identity=identity,
                environment="UIT",
                dip_base_url=f"https://127.0.0.1:{port}",
                api_key="key-sds",
            )
            certificates.import_certificate(
                connection=connection,
                purpose="trust_anchor",
                data=(ca / "ca.crt").read_bytes(),
                actor="bench",
            )
            for purpose, name in (("signing", "sds-sign"), ("mtls", "sds-mtls")):
                staged = certificates.import_certificate(
                    connection=connection,
                    purpose=purpose,
                    data=(creds / f"{name}.crt").read_bytes()
                    + (creds / f"{name}.key").read_bytes(),
                    actor="bench",
                )
                certificates.activate_first_certificate(certificate=staged, actor="bench")
            channel = tenants.create_channel(
                connection=connection, interface_id="IF-021", direction="outbound", actor="bench"
            )

        # 1. The outage: the DIP answers 503 while submissions keep being accepted.
        httpx.post(
            f"{admin}/admin/faults", json={"kind": "outage", "duration": 86_400}
        ).raise_for_status()
        backlog = items[: args.messages]
        started = time.perf_counter()
        cpu = time.process_time()
        ids: list[int] = []
        for first in range(0, len(backlog), SUBMIT_REQUEST):
            with tenant_context(tenant.id):
                ids += outbound.submit_messages(
                    channel=channel, items=backlog[first : first + SUBMIT_REQUEST], actor="bench"
                )
        accepting = time.perf_counter() - started
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        for first in range(0, len(ids), SUBMIT_REQUEST):
            with tenant_context(tenant.id):
                outbound.prepare_outbound(
                    tenant_id=tenant.id, message_ids=ids[first : first + SUBMIT_REQUEST]
                )
        preparing = time.perf_counter() - started
        prepare_cpu = time.process_time() - cpu
        failures = 0
        for _ in range(breaker.THRESHOLD + 2):
            with tenant_context(tenant.id):
                Message.objects.filter(id__in=ids[:100]).update(next_attempt_at=None)
            report = outbound.send_outbound(tenant_id=tenant.id, message_ids=ids[:100])
            failures += report.retried
        with tenant_context(tenant.id):
            state = breaker.get_breaker(connection_id=connection.id)
            ready = Message.objects.filter(state="ready").count()
        print(
            f"outage: {len(ids):,} accepted in {accepting:.1f} s ({len(ids) / accepting:,.0f}/s)"
            f" and prepared (claim, enrich, validate, store final bytes) in {preparing:.1f} s"
            f" ({len(ids) / preparing:,.0f}/s); {ready:,} ready; breaker"
            f" {state.state if state else '?'} after {failures} refused sends"
        )

        # 2. Recovery: the DIP is back; the probe closes the breaker and the backlog drains.
        httpx.delete(f"{admin}/admin/faults").raise_for_status()
        with tenant_context(tenant.id):
            breaker.ConnectionBreaker.objects.filter(connection_id=connection.id).update(
                probe_at=breaker.clock.now() - dt.timedelta(seconds=1)
            )
            Message.objects.filter(state="ready").update(next_attempt_at=None)
        probe = outbound.send_outbound(tenant_id=tenant.id, message_ids=ids[:100])
        print(f"recovery: probe sent {probe.sent}, breaker closed: {bool(probe.recovered)}")
        series: list[tuple[float, int]] = []
        last_print = [0.0, 0]
        drain_started = time.perf_counter()

        def progress(report: outbound.SendReport, remaining: int) -> None:
            elapsed = time.perf_counter() - drain_started
            done = report.sent + report.rejected + report.failed
            series.append((elapsed, done))
            if elapsed - last_print[0] >= args.every or remaining == 0:
                recent = (done - last_print[1]) / max(elapsed - last_print[0], 1e-9)
                print(
                    f"  drain {elapsed:7.1f} s: {done:>7,} done, {remaining:>7,} waiting;"
                    f" {recent:,.0f} msg/s now, {done / elapsed:,.0f} msg/s overall",
                    flush=True,
                )
                last_print[:] = [elapsed, done]

        cpu = time.process_time()
        with SigningMeter() as meter:
            drained = outbound.drain_connection(
                tenant_id=tenant.id, connection_id=connection.id, on_progress=progress
            )
        draining = time.perf_counter() - drain_started
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
        drain_cpu = time.process_time() - cpu
        batched = drained.sent / draining
        with tenant_context(tenant.id):
            exchanges = DipExchange.objects.filter(http_status=201).count()
            left = Message.objects.filter(state__in=["accepted", "ready", "sending"]).count()
        print(
            f"batched drain: {drained.sent:,} sent ({drained.rejected} rejected,"
            f" {drained.failed} parked) in {drained.requests:,} requests, {draining:.1f} s:"
            f" {batched:,.0f} msg/s; signing {meter.seconds:.1f} s CPU ="
            f" {meter.seconds / drain_cpu:.0%} of the worker's CPU; {left} left unsent;"
            f" {exchanges:,} evidence rows"
        )
        print("drain rate over time (about a tenth of the drain each):")
        tenth = draining / 10
        previous = (0.0, 0)
        for n in range(1, 11):
            point = next(((t, d) for t, d in series if t >= n * tenth - 1e-9), series[-1])
            if point == previous:
                continue  # progress comes per chunk: a short drain has fewer points than tenths
            rate = (point[1] - previous[1]) / max(point[0] - previous[0], 1e-9)
            print(f"  {previous[0]:6.1f}-{point[0]:6.1f} s: {rate:,.0f} msg/s")
            previous = point
        whole = len(ids) / (preparing + draining)
        print(
            f"whole worker path (prepare + drain): {whole:,.0f} msg/s;"
            f" {(prepare_cpu + drain_cpu) / len(ids) * 1000:.2f} ms CPU per message"
        )

        # 3. One message per request, through the same path.
        outbound.BATCH_MAX = 1
        with tenant_context(tenant.id):
            single_ids = outbound.submit_messages(
                channel=channel, items=items[args.messages :], actor="bench"
            )
            outbound.prepare_outbound(tenant_id=tenant.id, message_ids=single_ids)
        started = time.perf_counter()
        cpu = time.process_time()
        with SigningMeter() as meter:
            one_by_one = outbound.drain_connection(tenant_id=tenant.id, connection_id=connection.id)
        elapsed = time.perf_counter() - started
        single = one_by_one.sent / elapsed
        print(
            f"single: {one_by_one.sent:,} sent in {one_by_one.requests:,} requests, {elapsed:.1f} s:"
            f" {single:,.0f} msg/s; signing {meter.seconds:.1f} s CPU ="
            f" {meter.seconds / (time.process_time() - cpu):.0%} of the worker's CPU"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    from django.db import connections

    for conn in connections.all():
        conn.close()
    baseline = pg_baseline.measure(
        conninfo=env["BUSBAR_ADMIN_DATABASE_URL"],
        bodies=pg_baseline.if021_messages(1_000),
        rows=10_000,
        repeat=3,
    )
    print(pg_baseline.describe(baseline))
    print(
        "ratios to raw PostgreSQL:"
        f" batched drain {batched / baseline.batched_rows_per_second:.3f} (of batched inserts),"
        f" whole path {whole / baseline.batched_rows_per_second:.3f} (of batched inserts),"
        f" single {single / baseline.single_rows_per_second:.3f} (of single-row commits)"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    devenv.bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], DBNAME, drop=True)
    services.stop()


if __name__ == "__main__":
    main()
