"""How fast Busbar's DIP webhook durably acknowledges pushes, as ratios to raw PostgreSQL.

Starts the ingest server (granian with ``messaging.inbound.asgi:app``, as Busbar runs it;
``--server uvicorn`` to compare), plain HTTP on loopback (in production nginx ends TLS in front
of it), against a fresh benchmark database, with one tenant and
one IF-021 inbound channel whose trust anchor signed the requests. Then, with every request
signed beforehand (X-DIP-* headers, RSA-2048, as the DIP sends them) so the client spends the
shared CPU on sending only:

1. **batched**: pushes of 100 real IF-021 messages (about 4.8 KB each) from 8 senders; messages
   per second until every push has its 201 (verify, parse, compress, store, dedupe, answer);
2. **single**: one message per push from 16 senders; requests per second, p50 and p99.

The raw-PostgreSQL baseline (``bench/pg_baseline.py``) is measured in the same run on the same
message bytes. Nothing processes the stored messages (the inbound queue fills up in a Redis
database of its own), so this is the webhook alone.

    .venv/bin/python bench/ingest_bench.py --messages 10000 --single 2000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dipsim_bench import make_payloads  # noqa: E402
from bench.pg_baseline import describe, measure  # noqa: E402
from core.devenv import bootstrap_database, prepare, with_redis_db  # noqa: E402

BASE_URL = "https://ingest.bench:8443"
WARM_UP = 40  # single-message pushes sent before measuring


# The ingest app's ASGI servers, as the command that starts one on loopback.
SERVERS = {
    "uvicorn": lambda port, workers: [
        sys.executable, "-m", "uvicorn", "messaging.inbound.asgi:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--no-access-log",
        "--log-level", "warning",
    ],
    "granian": lambda port, workers: [
        str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--host",
        "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-ws",
        "--log-level", "warning", "messaging.inbound.asgi:app",
    ],
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def migrate_with_dip_signer(env: dict[str, str]) -> tuple[Any, Any, Any]:
    """Migrate the benchmark's database, set Django up, and make a fresh DIP CA with a signing
    key and certificate under it: (CA certificate, signing key, signing certificate). Shared by
    the benchmarks that push signed DIP webhooks."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--database", "owner", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    import logging

    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder().subject_name(name("bench DIP CA")).issuer_name(name("bench DIP CA"))
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder().subject_name(name("bench DIP signing")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return ca, key, leaf


def set_up(env: dict[str, str]) -> tuple[str, Any, Any]:
    """Migrate, then create a tenant with an IF-021 inbound channel trusting a fresh CA; return
    the channel's token, the signing key and its certificate PEM."""
    ca, key, leaf = migrate_with_dip_signer(env)
    from cryptography.hazmat.primitives import serialization

    from core.tenancy import tenant_context
    from tenants import certificates, services

    tenant = services.create_tenant(slug="bench", name="Bench Supply")
    with tenant_context(tenant.id):
        identity = services.create_identity(mpid="BNCH", role_code="SUP", dip_id="1000000001")
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
    return channel.webhook_token, key, leaf.public_bytes(serialization.Encoding.PEM)


def message_bytes(count: int, run: str) -> list[bytes]:
    """``count`` real IF-021 messages as the DIP pushes them (D0 filled in), as JSON bytes."""
    out = []
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    for i, payload in enumerate(make_payloads(count, seed=int(time.time()) % 10_000)):
        payload["CommonBlock"]["D0"] = {
            "transactionID": f"T-IF-021-2000000001-SDS-20260101-{run}{i:010X}",
            "transactionTimestamp": stamp,
            "publicationID": "PUB-021",
            "initialCorrelationID": None,
            "replayIndicator": False,
            "serviceTicketURL": None,
        }
        out.append(json.dumps({"payload": payload}, separators=(",", ":")).encode())
    return out


def signed(url: str, bodies: list[bytes], key: Any, cert_pem: bytes) -> list[tuple[bytes, dict]]:
    from messaging.dip.signing import sign_request

    return [
        (
            body,
            {
                **sign_request(
                    method="POST", url=url, body=body, private_key=key, certificate_pem=cert_pem
                ),
                "Content-Type": "application/json",
            },
        )
        for body in bodies
    ]


def raw_request(endpoint: str, body: bytes, headers: dict) -> bytes:
    """The whole HTTP/1.1 request as bytes, built before the clock starts."""
    url = httpx.URL(endpoint)
    lines = [f"POST {url.raw_path.decode()} HTTP/1.1", f"Host: {url.host}:{url.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


async def send_all(
    endpoint: str, requests: list[tuple[bytes, dict]], senders: int
) -> tuple[float, list[float], int]:
    """POST every request from ``senders`` concurrent keep-alive connections; return elapsed
    seconds, each request's latency and how many did not get a 201.

    A minimal HTTP/1.1 client on asyncio streams with every request prebuilt: the load generator
    shares the two cores with the server, and httpx spent about 3 ms of CPU per request there,
    as much as the server it measured. This one spends a few tens of microseconds."""
    url = httpx.URL(endpoint)
    prebuilt = [raw_request(endpoint, body, headers) for body, headers in requests]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for item in prebuilt:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures = 0

    async def sender() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            while not queue.empty():
                request = queue.get_nowait()
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status != 201:
                    failures += 1
                    if failures < 3:
                        print(f"  {status}: {answer[:200]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    return time.perf_counter() - started, latencies, failures


def server_cpu_seconds(server: subprocess.Popen) -> float:
    """CPU time (user + system) the server's processes have used so far."""
    import psutil

    processes = [psutil.Process(server.pid)]
    processes += processes[0].children(recursive=True)
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class DatabaseCpu:
    """CPU time (user + system) of the PostgreSQL backends serving the benchmark database: the
    third party on the two cores, beside the server and the load generator. Backends are read
    at the start and end of a phase (the ingest server's connections live through it)."""

    def __init__(self, admin: str, dbname: str) -> None:
        self.admin, self.dbname = admin, dbname
        self.start = self._times()

    def _times(self) -> dict[int, float]:
        import psutil
        import psycopg

        with psycopg.connect(self.admin) as conn:
            pids = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.dbname,),
                )
            ]
        times = {}
        for pid in pids:
            try:
                cpu = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            times[pid] = cpu.user + cpu.system
        return times

    def used(self) -> float:
        end = self._times()
        return sum(seconds - self.start.get(pid, 0.0) for pid, seconds in end.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000, help="messages sent in batches")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batch-senders", type=int, default=8)
    parser.add_argument("--single", type=int, default=2_000, help="single-message requests")
    parser.add_argument("--single-senders", type=int, default=16)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="ingest server processes (default 1, as make run starts it)",
    )
    parser.add_argument("--database", default="busbar_bench_ingest")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="sample the server processes with py-spy meanwhile; collapsed stacks go to FILE",
    )
    parser.add_argument(
        "--only", choices=("batched", "single"), help="run one of the two measurements"
    )
    parser.add_argument(
        "--server",
        choices=tuple(SERVERS),
        default="granian",
        help="the HTTP server in front of the ingest app (default: granian, as Busbar runs it)",
    )
    args = parser.parse_args()

    services, env = prepare(dbname=args.database)
    bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], args.database, drop=True)
    env.update(
        DJANGO_SETTINGS_MODULE="core.settings",
        BUSBAR_WEBHOOK_BASE_URL=BASE_URL,
        # Its own Redis database: the enqueued processing tasks reach no one's workers.
        REDIS_URL=with_redis_db(env["REDIS_URL"], 15),
        BUSBAR_INGEST_BACKLOG_LIMIT="10000000",
    )
    os.environ.update(env)
    token, key, cert_pem = set_up(env)
    url = f"{BASE_URL}/dip/webhooks/{token}"
    run = f"{int(time.time()) % 0xFFFFFF:06X}"
    messages = message_bytes(args.messages + args.single + WARM_UP, run)
    warm_up_bodies = [b"[" + m + b"]" for m in messages[-WARM_UP:]]
    messages = messages[:-WARM_UP]
    batched_bodies = [
        b"[" + b",".join(messages[i : i + args.batch]) + b"]"
        for i in range(0, args.messages, args.batch)
    ]
    single_bodies = [b"[" + m + b"]" for m in messages[args.messages :]]
    print(
        f"{len(messages)} IF-021 messages, {statistics.mean(map(len, messages)):,.0f} bytes each;"
        " signing the requests..."
    )
    batched = signed(url, batched_bodies, key, cert_pem)
    single = signed(url, single_bodies, key, cert_pem)
    warm_up = signed(url, warm_up_bodies, key, cert_pem)

    admin = env["BUSBAR_ADMIN_DATABASE_URL"]
    baseline = measure(
        conninfo=role_conninfo_admin(admin, args.database),
        bodies=[m.decode() for m in messages[:10_000]],
        rows=10_000,
        repeat=3,
    )
    print(describe(baseline))

    port = free_port()
    server = subprocess.Popen(
        SERVERS[args.server](port, args.workers), cwd=ROOT, env={**os.environ, **env}
    )
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}/dip/webhooks/{token}"
        # Warm up both processes (first connections, endpoint cache) on messages not measured.
        asyncio.run(send_all(endpoint, warm_up, 4))
        if args.profile:
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses",
                 "--format", "raw", "--rate", "200", "--gil", "--nonblocking", "--pid", str(server.pid),
                 "--output", args.profile],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)  # py-spy attaches
        if args.only != "single":
            database = DatabaseCpu(admin, args.database)
            cpu = server_cpu_seconds(server), time.process_time()
            elapsed, latencies, failures = asyncio.run(
                send_all(endpoint, batched, args.batch_senders)
            )
            cpu = server_cpu_seconds(server) - cpu[0], time.process_time() - cpu[1]
            database_cpu = database.used()
            rate = args.messages / elapsed
            p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
            print(
                f"batched: {rate:,.0f} messages/s in pushes of {args.batch} from"
                f" {args.batch_senders} senders (p99 {p99 * 1000:.0f} ms, {failures} not 201);"
                f" ratio to raw batched inserts {rate / baseline.batched_rows_per_second:.2f};"
                f" CPU per message: server {cpu[0] / args.messages * 1e6:.0f} us,"
                f" PostgreSQL {database_cpu / args.messages * 1e6:.0f} us,"
                f" client {cpu[1] / args.messages * 1e6:.0f} us"
            )
        if args.only != "batched":
            database = DatabaseCpu(admin, args.database)
            cpu = server_cpu_seconds(server), time.process_time()
            elapsed, latencies, failures = asyncio.run(
                send_all(endpoint, single, args.single_senders)
            )
            cpu = server_cpu_seconds(server) - cpu[0], time.process_time() - cpu[1]
            database_cpu = database.used()
            rate = len(single) / elapsed
            cuts = statistics.quantiles(latencies, n=100)
            print(
                f"single: {rate:,.0f} requests/s from {args.single_senders} senders, p50"
                f" {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms ({failures} not 201);"
                f" ratio to raw single-row commits {rate / baseline.single_rows_per_second:.2f};"
                f" CPU per request: server {cpu[0] / len(single) * 1e3:.2f} ms,"
                f" PostgreSQL {database_cpu / len(single) * 1e3:.2f} ms,"
                f" client {cpu[1] / len(single) * 1e3:.2f} ms"
            )
        if args.profile:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
    finally:
        server.terminate()
        server.wait(15)
        services.stop()


def role_conninfo_admin(admin: str, dbname: str) -> str:
    """The administrative connection, to the benchmark database (the baseline's own table)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(admin, dbname=dbname)


if __name__ == "__main__":
    main()
