"""End to end: DIP pushes of real IF-021 messages to delivered events at the tenant's system.

Real processes against a fresh benchmark database: the ingest server (granian
``messaging.inbound.asgi:app``, plain HTTP on loopback: in production nginx ends TLS in front of
it), one Celery worker for the ``inbound`` queue, one for ``delivery`` and one for
``maintenance`` with beat, as Busbar runs them (Redis broker, a database and key prefix of their
own), PostgreSQL, and one sample client per tenant
(``python -m sampleclient``, verifying every request with ``standardwebhooks`` and deduplicating
each event on its id). Two supplier tenants, A and B, each with an IF-021 channel and an
endpoint at its sample client. Every push is signed beforehand (X-DIP-* headers, RSA-2048, as
in ``ingest_bench.py``) so the senders spend the shared CPU on sending only.

1. **sustained**: A is offered ``--rate`` messages/s in pushes of 100 for ``--seconds``; prints
   what reached A's sample client per second, receipt to delivery, and the backlog left.
2. **burst**: ``--burst`` messages (100,000 by default) pushed to A as fast as the ingest server
   takes them; then the drain (events delivered per interval) until all have arrived, whether it
   is linear (the rate in each quarter of the drain), and a chart of it
   (``bench/e2e_drain.svg``). Meanwhile B sends one message every ``--b-every`` seconds: its
   latency from push to delivery while A floods is the fairness figure.

The raw-PostgreSQL baseline (``bench/pg_baseline.py``) is measured in the same run on the same
message bytes; rates print as ratios to it.

    .venv/bin/python bench/e2e_bench.py                      # 100,000 burst
    .venv/bin/python bench/e2e_bench.py --burst 20000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import SERVERS, DatabaseCpu, migrate_with_dip_signer  # noqa: E402
from bench.pg_baseline import describe, measure  # noqa: E402
from core.devenv import bootstrap_database, prepare, with_redis_db  # noqa: E402
from dipsim import messages as dip  # noqa: E402

BASE_URL = "https://ingest.bench:8443"
SDS = "3000000099"
TENANTS = {"a": "1000000001", "b": "1000000003"}  # slug -> the supplier's DIP ID
CHART = ROOT / "bench" / "e2e_drain.svg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tenant:
    slug: str
    dip_id: str
    token: str = ""
    port: int = 0
    secret: str = ""
    db: Path = Path()


@dataclass
class Stack:
    env: dict[str, str]
    tenants: dict[str, Tenant]
    ingest: str
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)


def set_up(env: dict[str, str], tenants: dict[str, Tenant], per_request: int) -> tuple[Any, bytes]:
    """Migrate; create each tenant with an IF-021 channel trusting a fresh CA and an endpoint at
    its sample client; return the DIP signing key and certificate."""
    ca, key, leaf = migrate_with_dip_signer(env)
    from cryptography.hazmat.primitives import serialization

    from core.tenancy import tenant_context
    from messaging.events import endpoints
    from tenants import certificates, services

    for t in tenants.values():
        tenant = services.create_tenant(slug=f"bench-{t.slug}", name=f"Bench {t.slug.upper()}")
        with tenant_context(tenant.id):
            identity = services.create_identity(
                mpid=f"BNC{t.slug.upper()}", role_code="SUP", dip_id=t.dip_id
            )
            connection = services.create_connection(
                identity=identity, environment="UIT", dip_base_url="https://dip.bench", api_key="k"
            )
            channel = services.create_channel(
                connection=connection, interface_id="IF-021", direction="inbound"
            )
            certificates.import_certificate(
                connection=connection,
                purpose="trust_anchor",
                data=ca.public_bytes(serialization.Encoding.PEM),
                actor="bench",
            )
            endpoints.create_endpoint(
                name="sample client",
                url=f"http://127.0.0.1:{t.port}/hooks",
                event_types=["*"],
                actor="bench",
                secret=t.secret,
                events_per_request=per_request,
            )
        t.token = channel.webhook_token
    return key, leaf.public_bytes(serialization.Encoding.PEM)


def make_messages(count: int, *, recipient: str, run: str, seed: int) -> list[bytes]:
    """``count`` distinct real IF-021 messages (about 4.8 KB each) for ``recipient`` as the DIP
    pushes them: each its own valid MPAN and transaction id, so none is a duplicate."""
    rng = random.Random(seed)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    templates = [
        dip.if021(sender=SDS, mpan=dip.make_mpan(rng), day=day, rng=rng, recipients=[recipient])
        for _ in range(100)
    ]
    out = []
    for i in range(count):
        base = templates[i % len(templates)]
        common = dict(base["CommonBlock"])
        common["S1"] = {
            **common["S1"],
            "senderUniqueReference": f"S-IF-021-{SDS}-SDS-{day:%Y%m%d}-{run}{seed}x{i}",
        }
        common["M0"] = {**common["M0"], "MPANCore": dip.make_mpan(rng)}
        common["D0"] = {
            "transactionID": f"T-IF-021-{SDS}-SDS-{day:%Y%m%d}-{run}{seed:02d}{i:08X}",
            "transactionTimestamp": stamp,
            "publicationID": "PUB-021",
            "initialCorrelationID": None,
            "replayIndicator": False,
            "serviceTicketURL": None,
        }
        payload = {"CommonBlock": common, "CustomBlock": base["CustomBlock"]}
        out.append(json.dumps({"payload": payload}, separators=(",", ":")).encode())
    return out


def signed_pushes(
    messages: list[bytes], batch: int, token: str, key: Any, cert_pem: bytes
) -> list[tuple[bytes, dict[str, str]]]:
    """Pushes of ``batch`` messages, signed now. The DIP's signature date must be within the
    webhook's clock skew (300 s) when it arrives, so each phase signs its pushes just before it
    starts, and the burst signs in chunks just ahead of sending (``Burst``)."""
    from messaging.dip.signing import sign_request

    url = f"{BASE_URL}/dip/webhooks/{token}"
    pushes = []
    for i in range(0, len(messages), batch):
        body = b"[" + b",".join(messages[i : i + batch]) + b"]"
        headers = sign_request(
            method="POST", url=url, body=body, private_key=key, certificate_pem=cert_pem
        )
        pushes.append((body, {**headers, "Content-Type": "application/json"}))
    return pushes


class Burst:
    """The burst's pushes, signed a chunk at a time just before they are needed (a 100,000
    burst takes longer to send than the signature date stays acceptable)."""

    CHUNK = 2_000  # messages signed at a time

    def __init__(self, messages: list[bytes], batch: int, token: str, key: Any, cert: bytes):
        self.messages, self.batch, self.token, self.key, self.cert = (
            messages,
            batch,
            token,
            key,
            cert,
        )

    def chunks(self) -> Any:
        for i in range(0, len(self.messages), self.CHUNK):
            yield signed_pushes(
                self.messages[i : i + self.CHUNK], self.batch, self.token, self.key, self.cert
            )


def received(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=10) as response:
        return int(json.load(response)["received"])


async def post_all(
    endpoint: str,
    pushes: list[tuple[bytes, dict[str, str]]],
    *,
    senders: int,
    per_second: float | None = None,
) -> int:
    """POST each push until it has its 201 (a 503/429 is retried after a pause, as the DIP
    would); at ``per_second`` pushes a second when given. Returns the retries needed."""
    retries = 0
    started = time.perf_counter()
    queue: asyncio.Queue[tuple[int, tuple[bytes, dict[str, str]]]] = asyncio.Queue()
    for item in enumerate(pushes):
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def sender() -> None:
            nonlocal retries
            while not queue.empty():
                n, (body, headers) = queue.get_nowait()
                if per_second:
                    delay = started + n / per_second - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                while True:
                    response = await client.post(endpoint, content=body, headers=headers)
                    if response.status_code == 201:
                        break
                    retries += 1
                    if response.status_code not in (429, 503):
                        raise RuntimeError(f"push refused: {response.status_code} {response.text}")
                    await asyncio.sleep(1)

        await asyncio.gather(*(sender() for _ in range(senders)))
    return retries


def start_stack(stack: Stack, *, ingest_workers: int, inbound: int, delivery: int) -> None:
    full_env = {**os.environ, **stack.env}
    logs = Path(tempfile.mkdtemp(prefix="busbar-e2e-"))

    def start(name: str, command: list[str]) -> None:
        out = (logs / f"{name}.log").open("ab")
        # Each in a process group of its own, stopped as a group: granian's workers too.
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.processes.append((name, process))

    port = int(stack.ingest.rsplit(":", 1)[1])
    # fmt: off
    start("ingest", SERVERS["granian"](port, ingest_workers))
    # The maintenance worker and beat as Busbar runs them: the sweepers, the ledger seals and
    # the upkeep of the tables the burst fills (messaging.store.upkeep).
    for family, concurrency in (("inbound", inbound), ("delivery", delivery), ("maintenance", 1)):
        start(f"worker-{family}", [sys.executable, "-m", "celery", "-A", "core", "worker",
                                   "-Q", family, "-n", f"bench-{family}-{os.getpid()}@%h",
                                   "--concurrency", str(concurrency), "-l", "WARNING",
                                   "--without-gossip", "--without-mingle", "--without-heartbeat"])
    start("beat", [sys.executable, "-m", "celery", "-A", "core", "beat", "-l", "WARNING",
                   "-s", str(logs / "celerybeat-schedule")])
    for t in stack.tenants.values():
        start(f"sampleclient-{t.slug}", [sys.executable, "-m", "sampleclient", "--port",
                                         str(t.port), "--secret", t.secret, "--name", t.slug,
                                         "--db", str(t.db)])
    # fmt: on
    for _ in range(300):
        try:
            httpx.get(f"{stack.ingest}/healthz", timeout=1)
            for t in stack.tenants.values():
                received(t.port)
            break
        except (httpx.HTTPError, OSError):
            time.sleep(0.2)
    pids = ", ".join(f"{name} {process.pid}" for name, process in stack.processes)
    print(f"processes up ({pids}; logs in {logs})", flush=True)


class CpuSplit:
    """CPU time (user + system) per part of the pipeline over a phase: each process group of the
    stack (its children too: granian's and Celery's workers), PostgreSQL's backends serving the
    benchmark database, and this process (the load generator and the watcher). On two shared
    cores the rate is what the parts' CPU adds up to, so the split says where to cut."""

    def __init__(self, stack: Stack, admin: str, dbname: str) -> None:
        self.stack = stack
        self.database = DatabaseCpu(admin, dbname)
        self.start = self._groups()
        self.own = time.process_time()

    def _groups(self) -> dict[str, float]:
        import psutil

        used: dict[str, float] = {}
        for name, process in self.stack.processes:
            part = name.split("-", 1)[0] if name.startswith("sampleclient") else name
            try:
                root = psutil.Process(process.pid)
                members = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for member in members:
                try:
                    times = member.cpu_times()
                except psutil.Error:
                    continue
                used[part] = used.get(part, 0.0) + times.user + times.system
        return used

    def describe(self, messages: int) -> str:
        end = self._groups()
        parts = {name: seconds - self.start.get(name, 0.0) for name, seconds in end.items()}
        parts["PostgreSQL"] = self.database.used()
        parts["load generator"] = time.process_time() - self.own
        total = sum(parts.values())
        listed = ", ".join(
            f"{name} {seconds / max(messages, 1) * 1e6:,.0f}" for name, seconds in parts.items()
        )
        return f"CPU per message (us): {listed}; in all {total / max(messages, 1) * 1e6:,.0f}"


def stop_stack(stack: Stack) -> None:
    for _, process in reversed(stack.processes):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for _, process in stack.processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


class Stages:
    """Where A's and B's messages are (the store's state counters) and the deliveries owed, read
    as the administrator (the benchmark's own database) for the progress line."""

    def __init__(self, conninfo: str) -> None:
        self.connection = psycopg.connect(conninfo, autocommit=True)

    def __call__(self) -> str:
        states: dict[str, int] = dict(
            self.connection.execute(
                "SELECT state, sum(count)::bigint FROM messaging_state_count"
                " WHERE direction = 'inbound' GROUP BY state"
            ).fetchall()
        )
        owed = self.connection.execute(
            "SELECT count(*) FROM messaging_delivery WHERE state = 'pending'"
        ).fetchone()
        return (
            f"received {states.get('received', 0):,}, valid {states.get('valid', 0):,},"
            f" normalised {states.get('normalised', 0):,}, owed {owed[0] if owed else 0:,},"
            f" invalid {states.get('invalid', 0):,}"
        )


def watch(
    port: int, target: int, *, interval: float, label: str, stages: Stages | None = None
) -> list[tuple[float, int]]:
    """Poll the sample client until ``target`` events have arrived (or nothing moves for two
    minutes); print progress; return (seconds since start, events so far) samples."""
    started = time.perf_counter()
    samples = [(0.0, received(port))]
    still = 0.0
    while samples[-1][1] < target:
        time.sleep(interval)
        now, count = time.perf_counter() - started, received(port)
        rate = (count - samples[-1][1]) / (now - samples[-1][0])
        still = still + interval if count == samples[-1][1] else 0.0
        samples.append((now, count))
        where = f" [{stages()}]" if stages else ""
        print(
            f"  {label}: {count:,}/{target:,} delivered, {rate:,.0f}/s now, {now:,.0f} s{where}",
            flush=True,
        )
        if still >= 120:
            print("\n  nothing arrived for two minutes: stopping the watch", flush=True)
            break
    return samples


def latencies(db: Path, sent: dict[str, float]) -> list[float]:
    """Seconds from push to arrival for each of B's messages (matched on the sender reference)."""
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute("SELECT received_at, body FROM received").fetchall()
    finally:
        connection.close()
    out = []
    for received_at, body in rows:
        reference = json.loads(body)["data"].get("sender_reference")
        if reference in sent:
            out.append(received_at - sent[reference])
    return out


def drain_chart(samples: list[tuple[float, int]], path: Path, title: str) -> None:
    """An SVG of events delivered per interval (bars) and in total (line) over the drain."""
    width, height, pad = 720, 320, 48
    end = max(samples[-1][0], 1.0)
    total = max(samples[-1][1] - samples[0][1], 1)
    rates = [
        (t1, (c1 - c0) / max(t1 - t0, 1e-9)) for (t0, c0), (t1, c1) in itertools.pairwise(samples)
    ]
    top = max((r for _, r in rates), default=1.0) * 1.1 or 1.0

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * t / end

    def y(fraction: float) -> float:
        return height - pad - (height - 2 * pad) * fraction

    bars = "".join(
        f'<rect x="{x(t0):.1f}" y="{y(r / top):.1f}" width="{max(x(t1) - x(t0) - 1, 1):.1f}"'
        f' height="{(height - pad) - y(r / top):.1f}" fill="#9ecae1"/>'
        for (t0, _), (t1, r) in zip(samples, rates, strict=False)
    )
    line = " ".join(f"{x(t):.1f},{y((c - samples[0][1]) / total):.1f}" for t, c in samples)
    ideal = f"{x(0):.1f},{y(0):.1f} {x(end):.1f},{y(1):.1f}"
    svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"
 font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20" font-size="14">{title}</text>
{bars}
<polyline points="{ideal}" fill="none" stroke="#bbb" stroke-dasharray="4 4"/>
<polyline points="{line}" fill="none" stroke="#08519c" stroke-width="2"/>
<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>
<text x="{width / 2:.0f}" y="{height - 12}" text-anchor="middle">seconds since the burst
 began ({end:,.0f} s in all)</text>
<text x="{pad - 4}" y="{pad - 6}" text-anchor="start">bars: events/s (max {top / 1.1:,.0f});
 line: share delivered (dashed: perfectly linear)</text>
</svg>
"""
    path.write_text(svg)


def quarters(samples: list[tuple[float, int]]) -> list[float]:
    """The delivery rate in each quarter of the drain (by events): equal rates mean linear."""
    start, total = samples[0][1], samples[-1][1] - samples[0][1]
    out, previous = [], samples[0]
    for q in range(1, 5):
        goal = start + total * q / 4
        point = next((s for s in samples if s[1] >= goal), samples[-1])
        out.append((point[1] - previous[1]) / max(point[0] - previous[0], 1e-9))
        previous = point
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000, help="sustained phase, messages/s")
    parser.add_argument("--seconds", type=float, default=60, help="sustained phase length")
    parser.add_argument("--burst", type=int, default=100_000, help="messages in the burst")
    parser.add_argument("--batch", type=int, default=100, help="messages per push")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--b-every", type=float, default=1.0, help="B's trickle, seconds")
    parser.add_argument("--per-request", type=int, default=100, help="events per signed request")
    parser.add_argument("--ingest-workers", type=int, default=1)
    parser.add_argument("--inbound-concurrency", type=int, default=2)
    parser.add_argument("--delivery-concurrency", type=int, default=1)
    parser.add_argument("--interval", type=float, default=2.0, help="drain sampling, seconds")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args()

    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
    run = f"{int(time.time()) % 0xFFFFFF:06X}"
    dbname = f"busbar_bench_e2e_{os.getpid()}"
    services, env = prepare(dbname=dbname)
    bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], dbname, drop=True)
    scratch = Path(tempfile.mkdtemp(prefix="busbar-e2e-clients-"))
    tenants = {
        slug: Tenant(slug, dip_id, port=free_port(), db=scratch / f"{slug}.sqlite")
        for slug, dip_id in TENANTS.items()
    }
    from messaging.events.signing import generate_secret

    for t in tenants.values():
        t.secret = generate_secret()
    env.update(
        DJANGO_SETTINGS_MODULE="core.settings",
        BUSBAR_WEBHOOK_BASE_URL=BASE_URL,
        REDIS_URL=with_redis_db(env["REDIS_URL"], 13),
        BUSBAR_REDIS_PREFIX=f"e2e{run}:",
        BUSBAR_INGEST_BACKLOG_LIMIT="10000000",
        BUSBAR_DOWNSTREAM_ALLOW=",".join(f"127.0.0.1:{t.port}" for t in tenants.values()),
        BUSBAR_LOG_LEVEL="WARNING",
    )
    os.environ.update(env)
    key, cert_pem = set_up(env, tenants, args.per_request)
    sustained_count = int(args.rate * args.seconds) // args.batch * args.batch
    b_count = int(3 * 3600 / args.b_every)  # more than the burst can take
    print(
        f"generating {sustained_count + args.burst:,} IF-021 messages for A and signing the"
        " pushes...",
        flush=True,
    )
    a_messages = make_messages(
        args.batch + sustained_count + args.burst, recipient=TENANTS["a"], run=run, seed=1
    )
    warm_a = signed_pushes(a_messages[: args.batch], args.batch, tenants["a"].token, key, cert_pem)
    a_messages = a_messages[args.batch :]
    burst = Burst(a_messages[sustained_count:], args.batch, tenants["a"].token, key, cert_pem)
    b_messages = make_messages(min(b_count, 20_000), recipient=TENANTS["b"], run=run, seed=2)
    warm_b = signed_pushes(b_messages[:1], 1, tenants["b"].token, key, cert_pem)
    b_messages = b_messages[1:]
    b_refs = [
        json.loads(m)["payload"]["CommonBlock"]["S1"]["senderUniqueReference"] for m in b_messages
    ]
    baseline = measure(
        conninfo=make_conninfo(env["BUSBAR_ADMIN_DATABASE_URL"], dbname=dbname),
        bodies=[m.decode() for m in a_messages[:10_000]],
        rows=10_000,
        repeat=3,
    )
    print(describe(baseline), flush=True)

    stack = Stack(env=env, tenants=tenants, ingest=f"http://127.0.0.1:{free_port()}")
    start_stack(
        stack,
        ingest_workers=args.ingest_workers,
        inbound=args.inbound_concurrency,
        delivery=args.delivery_concurrency,
    )
    stages = Stages(make_conninfo(env["BUSBAR_ADMIN_DATABASE_URL"], dbname=dbname))
    a_url = f"{stack.ingest}/dip/webhooks/{tenants['a'].token}"
    b_url = f"{stack.ingest}/dip/webhooks/{tenants['b'].token}"
    try:
        # 0. warm-up: one push each way, so every process has started and connected
        print("warming up (one push each for A and B)...", flush=True)
        asyncio.run(post_all(a_url, warm_a, senders=1))
        asyncio.run(post_all(b_url, warm_b, senders=1))
        watch(tenants["a"].port, args.batch, interval=1.0, label="warm-up A", stages=stages)
        watch(tenants["b"].port, 1, interval=1.0, label="warm-up B")
        # 1. sustained
        print(
            f"sustained: {args.rate:,.0f} messages/s offered for {args.seconds:.0f} s", flush=True
        )
        sustained = signed_pushes(
            a_messages[:sustained_count], args.batch, tenants["a"].token, key, cert_pem
        )
        sender = threading.Thread(
            target=lambda: asyncio.run(
                post_all(a_url, sustained, senders=args.senders, per_second=args.rate / args.batch)
            ),
            daemon=True,
        )
        cpu = CpuSplit(stack, env["BUSBAR_ADMIN_DATABASE_URL"], dbname)
        started = time.perf_counter()
        sender.start()
        samples = watch(
            tenants["a"].port,
            args.batch + sustained_count,
            interval=2.0,
            label="sustained",
            stages=stages,
        )
        samples = [(t, c - args.batch) for t, c in samples]
        sender.join()
        elapsed = time.perf_counter() - started
        steady = [s for s in samples if s[0] >= min(10.0, args.seconds / 4)]
        steady_rate = (
            (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
            if len(steady) > 1 and steady[-1][0] > steady[0][0]
            else samples[-1][1] / elapsed
        )
        done = samples[-1][1]
        print(
            f"sustained: {done:,} of {sustained_count:,} delivered in {elapsed:,.1f} s;"
            f" {steady_rate:,.0f} messages/s receipt to delivery after warm-up"
            f" ({steady_rate / baseline.batched_rows_per_second:.3f} of raw batched inserts)",
            flush=True,
        )
        print(f"sustained: {cpu.describe(done)}", flush=True)

        # 2. burst, with B's trickle
        print(
            f"burst: {args.burst:,} messages to A, B sends one every {args.b_every} s", flush=True
        )
        sent_at: dict[str, float] = {}
        stop_b = threading.Event()

        def trickle() -> None:
            with httpx.Client(timeout=120) as client:
                for message, reference in zip(b_messages, b_refs, strict=True):
                    if stop_b.is_set():
                        return
                    [(body, headers)] = signed_pushes(
                        [message], 1, tenants["b"].token, key, cert_pem
                    )
                    sent_at[reference] = time.time()
                    client.post(b_url, content=body, headers=headers)
                    stop_b.wait(args.b_every)

        base = received(tenants["a"].port)
        cpu = CpuSplit(stack, env["BUSBAR_ADMIN_DATABASE_URL"], dbname)
        b_thread = threading.Thread(target=trickle, daemon=True)
        b_thread.start()
        pushing_started = time.perf_counter()

        def push_burst() -> None:
            for chunk in burst.chunks():
                asyncio.run(post_all(a_url, chunk, senders=args.senders))

        pusher = threading.Thread(target=push_burst, daemon=True)
        pusher.start()
        drain = watch(
            tenants["a"].port,
            base + args.burst,
            interval=args.interval,
            label="burst",
            stages=stages,
        )
        pusher.join()
        stop_b.set()
        b_thread.join()
        burst_elapsed = time.perf_counter() - pushing_started
        drain = [(t, c - base) for t, c in drain]
        rates = quarters(drain)
        burst_cpu = cpu.describe(drain[-1][1])
        print(
            f"burst: {drain[-1][1]:,} of {args.burst:,} delivered in {burst_elapsed:,.1f} s,"
            f" {drain[-1][1] / burst_elapsed:,.0f} messages/s"
            f" ({drain[-1][1] / burst_elapsed / baseline.batched_rows_per_second:.3f} of raw"
            " batched inserts)",
            flush=True,
        )
        print(
            "drain by quarter (messages/s): "
            + ", ".join(f"{r:,.0f}" for r in rates)
            + f"; slowest/fastest {min(rates) / max(max(rates), 1e-9):.2f} (1.00 is linear)",
            flush=True,
        )
        print(f"burst: {burst_cpu}", flush=True)
        drain_chart(
            drain,
            args.chart,
            f"Drain of a {args.burst:,}-message burst, end to end (load {os.getloadavg()[0]:.1f})",
        )
        print(f"chart: {args.chart}", flush=True)
        time.sleep(max(args.b_every, 2.0) * 3)  # B's last messages
        waits = sorted(latencies(tenants["b"].db, sent_at))
        if waits:
            cuts = statistics.quantiles(waits, n=100) if len(waits) > 1 else [waits[0]] * 99
            print(
                f"fairness: B's {len(waits)} of {len(sent_at)} messages sent during A's burst"
                f" delivered in p50 {cuts[49]:.2f} s, p99 {cuts[98]:.2f} s, max {waits[-1]:.2f} s"
                f" while A's backlog drained over {burst_elapsed:,.0f} s",
                flush=True,
            )
    finally:
        stages.connection.close()
        stop_stack(stack)
        from django.db import connections

        for connection in connections.all():
            connection.close()
        with psycopg.connect(env["BUSBAR_ADMIN_DATABASE_URL"], autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        services.stop()
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
