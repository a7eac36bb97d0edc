"""The ceiling of any single-message webhook served by granian on this machine, as a ratio to raw
PostgreSQL: what ``ingest_bench.py``'s single-message figure could reach if Busbar's own work
cost nothing.

The same requests as ``ingest_bench.py`` sends (real IF-021 messages, one per push, with the
four ``X-DIP-*`` headers of an RSA-2048 signature) go from 16 keep-alive senders to a stand-in
app under granian, started as Busbar's ingest server is (one process, ASGI). The stand-in reads
the body and answers 201, either at once or after a stand-in group commit: every request
waiting joins the next group, and a thread "commits" a group by sleeping ``--commit-ms``
(holding no CPU and no GIL, as a thread waiting for PostgreSQL does). Nothing is verified or
stored. The raw baseline (``pg_baseline.py``) is measured in the same run on the same bytes.

    .venv/bin/python bench/ingest_floor.py --requests 20000 --commit-ms 2

granian imports this module as the app (``bench.ingest_floor:app``); ``BUSBAR_FLOOR_COMMIT_MS``
tells the app how long a group's commit takes (0: no group, an answer at once).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANSWER = b'[{"transactionID":"T","status":"ACCEPTED","description":"stored"}]'
COMMIT_SECONDS = float(os.environ.get("BUSBAR_FLOOR_COMMIT_MS", "0")) / 1000


class _StandInCommitter:
    """One thread answering every request that arrived while its last "commit" slept, then
    sleeping again: the group commit's shape (``messaging.inbound.asgi.GroupCommitter``) with no
    work in it. Each group's answers reach their event loop in one wake-up, as there."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._pending: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="floor-commit", daemon=True).start()

    def submit(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        with self._wake:
            self._pending.append((loop, future))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                group, self._pending = self._pending, []
            time.sleep(self.seconds)
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for loop, future in group:
                by_loop.setdefault(loop, []).append(future)
            for loop, futures in by_loop.items():
                loop.call_soon_threadsafe(_settle, futures)


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


_committer = _StandInCommitter(COMMIT_SECONDS) if COMMIT_SECONDS > 0 else None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The stand-in: read the body, wait for a group's commit if there is one, answer 201."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    if _committer is not None:
        loop = asyncio.get_running_loop()
        committed = loop.create_future()
        _committer.submit(loop, committed)
        await committed
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def _signed_requests(count: int) -> list[tuple[bytes, dict]]:
    """``count`` single-message pushes as ``ingest_bench.py`` sends them, signed by a throwaway
    key (nobody checks the signature here; the headers' size is what the server parses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from bench.ingest_bench import BASE_URL, message_bytes, signed

    now = dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench DIP signing")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    bodies = [b"[" + m + b"]" for m in message_bytes(count, f"{int(time.time()) % 0xFFFFFF:06X}")]
    return signed(
        f"{BASE_URL}/dip/webhooks/floor",
        bodies,
        key,
        certificate.public_bytes(serialization.Encoding.PEM),
    )


def _measure(
    commit_ms: float, requests: list[tuple[bytes, dict]], senders: int
) -> tuple[str, float]:
    """Serve ``requests`` through the stand-in under granian: its figures as one line, and its
    rate."""
    from bench.ingest_bench import free_port, send_all, server_cpu_seconds

    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--host",
            "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws", "--log-level",
            "warning", "bench.ingest_floor:app",
        ],
        cwd=ROOT,
        env={**os.environ, "BUSBAR_FLOOR_COMMIT_MS": str(commit_ms)},
    )  # fmt: skip
    try:
        import httpx

        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}/dip/webhooks/floor"
        asyncio.run(send_all(endpoint, requests[:200], 4))  # first connections, warm caches
        cpu = server_cpu_seconds(server), time.process_time()
        elapsed, latencies, failures = asyncio.run(send_all(endpoint, requests, senders))
        server_cpu = server_cpu_seconds(server) - cpu[0]
        client_cpu = time.process_time() - cpu[1]
    finally:
        server.terminate()
        server.wait(15)
    cuts = statistics.quantiles(latencies, n=100)
    rate = len(requests) / elapsed
    shape = f"a {commit_ms:g} ms group commit" if commit_ms else "no commit"
    return (
        f"{shape}: {rate:,.0f} requests/s, p50 {cuts[49] * 1000:.1f} ms, p99"
        f" {cuts[98] * 1000:.1f} ms ({failures} not 201); CPU per request: server"
        f" {server_cpu / len(requests) * 1e3:.3f} ms, client {client_cpu / len(requests) * 1e3:.3f}"
        " ms"
    ), rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument(
        "--commit-ms",
        type=float,
        action="append",
        help="a stand-in group commit of this many milliseconds (repeatable; default 2)",
    )
    parser.add_argument("--database", default="busbar_bench_floor")
    args = parser.parse_args()

    from bench.ingest_bench import role_conninfo_admin
    from bench.pg_baseline import describe, measure
    from core.devenv import bootstrap_database, prepare

    services, env = prepare(dbname=args.database)
    try:
        bootstrap_database(env["BUSBAR_ADMIN_DATABASE_URL"], args.database, drop=True)
        print(f"signing {args.requests:,} single-message pushes...")
        requests = _signed_requests(args.requests)
        baseline = measure(
            conninfo=role_conninfo_admin(env["BUSBAR_ADMIN_DATABASE_URL"], args.database),
            bodies=[body[1:-1].decode() for body, _headers in requests[:10_000]],
            rows=10_000,
            repeat=3,
        )
        print(describe(baseline))
        for commit_ms in [0.0, *(args.commit_ms or [2.0])]:
            line, rate = _measure(commit_ms, requests, args.senders)
            print(f"{line}; ratio to raw single-row commits"
                  f" {rate / baseline.single_rows_per_second:.2f}")  # fmt: skip
    finally:
        services.stop()


if __name__ == "__main__":
    main()
