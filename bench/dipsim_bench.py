"""How fast dipsim accepts and pushes IF-021 messages on this machine (see bench/README.md).

Runs ``python -m dipsim serve`` as its own process (as in Busbar's benchmarks), then:

1. accept: signed mTLS POSTs of IF-021 batches from concurrent senders; messages/s until every
   request has its 201;
2. single: the same with one message per request (requests/s);
3. push: with a backlog of accepted messages waiting for a webhook, registers an mTLS webhook
   (in this process) and measures messages/s until all are received.

Prints figures; asserts nothing about them. Example::

    .venv/bin/python bench/dipsim_bench.py --messages 20000 --batch 100 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import pg_baseline  # noqa: E402
from dipsim import messages, pki  # noqa: E402
from dipsim.signing import Signer  # noqa: E402
from dipsim.store import Store  # noqa: E402

SUP, SDS = "1000000001", "3000000099"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dipsim(
    data: Path, ca: Path, port: int, admin_port: int, extra: list[str]
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dipsim", "serve", "--data-dir", str(data), "--ca-dir", str(ca),
         "--port", str(port), "--admin-port", str(admin_port), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            if line.startswith("dipsim ready:"):
                print(line.strip())
                return process
            if not line:
                break
    process.kill()
    raise SystemExit("dipsim did not start")


def make_payloads(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` distinct IF-021 payloads (about 4.8 KB each) from a few hundred templates."""
    rng = random.Random(seed)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    templates = [
        messages.if021(sender=SDS, mpan=messages.make_mpan(rng), day=day, rng=rng, recipients=[SUP])
        for _ in range(200)
    ]
    out = []
    for i in range(count):
        base = templates[i % len(templates)]
        common = base["CommonBlock"]
        s1 = {
            **common["S1"],
            "senderUniqueReference": f"S-IF-021-{SDS}-SDS-{day:%Y%m%d}-b{seed}x{i}",
        }
        out.append({"CommonBlock": {**common, "S1": s1}, "CustomBlock": base["CustomBlock"]})
    return out


class Sender:
    def __init__(self, base: str, creds: Path, ca: Path) -> None:
        self.base = base
        self.signer = Signer.from_files(str(creds / "sds-sign.crt"), str(creds / "sds-sign.key"))
        self.context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca / "ca.crt")
        )
        self.context.load_cert_chain(str(creds / "sds-mtls.crt"), str(creds / "sds-mtls.key"))

    async def run(
        self, payloads: list[dict[str, Any]], batch: int, concurrency: int
    ) -> tuple[float, int]:
        url = f"{self.base}/dip-channel/IF-021"
        bodies = [
            json.dumps([{"payload": p} for p in payloads[i : i + batch]]).encode()
            for i in range(0, len(payloads), batch)
        ]
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        failures = 0
        connector = aiohttp.TCPConnector(ssl=self.context, limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal failures
                while not queue.empty():
                    body = queue.get_nowait()
                    headers = {"X-API-Key": "key-sds", "Content-Type": "application/json"}
                    headers.update(self.signer.headers("POST", url, body))
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status != 201:
                            failures += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started, failures


async def receive(
    port: int, ca: Path, creds: Path, expected: int, timeout: float
) -> tuple[float, int]:
    received = 0
    done = asyncio.Event()
    first: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        nonlocal received
        items = json.loads(await request.read())
        if not first:
            first.append(time.perf_counter())
        received += len(items)
        if received >= expected:
            done.set()
        return web.json_response({"messageArray": []}, status=201)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca / "ca.crt"))
    context.load_cert_chain(str(creds / "hook.crt"), str(creds / "hook.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    started = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    elapsed = time.perf_counter() - started
    await runner.cleanup()
    return elapsed, received


async def register_webhook(base: str, creds: Path, ca: Path, url: str) -> None:
    signer = Signer.from_files(str(creds / "sup-sign.crt"), str(creds / "sup-sign.key"))
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca / "ca.crt"))
    context.load_cert_chain(str(creds / "sup-mtls.crt"), str(creds / "sup-mtls.key"))
    target = f"{base}/dip-channel/IF-021/pubconfig/{SUP}"
    body = json.dumps({"callbackURL": url, "maxMessageCount": 100}).encode()
    headers = {
        "X-API-Key": "key-sup",
        "Content-Type": "application/json",
        **signer.headers("POST", target, body),
    }
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(target, data=body, headers=headers) as response,
    ):
        assert response.status == 201, await response.text()


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="dipsim-bench-"))
    ca, data, creds = work / "ca", work / "data", work / "creds"
    pki.init_ca(ca)
    for name, dip_id in (("sds", SDS), ("sup", SUP)):
        pki.issue_to_files(ca, dip_ids=[dip_id], kind="mtls", out=creds / f"{name}-mtls")
        pki.issue_to_files(ca, dip_ids=[dip_id], kind="signing", out=creds / f"{name}-sign")
    pki.issue_to_files(ca, dip_ids=[SUP], kind="server", out=creds / "hook", sans=["127.0.0.1"])
    store = Store(data)
    store.upsert_participant(dip_id=SUP, mpid="ACME", role="SUP", api_key="key-sup")
    store.upsert_participant(dip_id=SDS, mpid="SDSB", role="SDS", api_key="key-sds")
    store.close()
    port, admin_port, hook_port = free_port(), free_port(), free_port()
    extra = ["--spec-dir", args.spec_dir] if args.spec_dir else []
    extra += [
        "--push-batch",
        str(args.push_batch),
        "--push-concurrency",
        str(args.push_concurrency),
    ]
    extra += ["--push-parallel", str(args.push_parallel)]
    if args.simulated:
        extra.append("--simulated")
    process = start_dipsim(data, ca, port, admin_port, extra)
    base = f"https://127.0.0.1:{port}"
    try:
        sender = Sender(base, creds, ca)
        payloads = make_payloads(args.messages + args.single, seed=int(time.time()))
        size = len(json.dumps(payloads[0]))
        print(f"IF-021 message size: {size} bytes; CPUs: {len(os.sched_getaffinity(0))}")
        await sender.run(
            payloads[:200], args.batch, 1
        )  # warm-up (compiles validators, opens pools)
        elapsed, failures = await sender.run(
            payloads[200 : args.messages], args.batch, args.concurrency
        )
        accepted = args.messages - 200
        accept_rate = accepted / elapsed
        print(
            f"accept: {accepted} msgs in batches of {args.batch}, {args.concurrency} senders:"
            f" {accepted / elapsed:,.0f} msg/s ({elapsed:.2f} s, {failures} failed requests)"
        )
        elapsed, failures = await sender.run(payloads[args.messages :], 1, args.concurrency)
        print(
            f"single: {args.single} requests of 1 message, {args.concurrency} senders:"
            f" {args.single / elapsed:,.0f} req/s ({failures} failed)"
        )
        backlog = args.messages + args.single
        receiver = asyncio.create_task(receive(hook_port, ca, creds, backlog, timeout=args.timeout))
        await asyncio.sleep(0.2)
        await register_webhook(base, creds, ca, f"https://127.0.0.1:{hook_port}/hook")
        elapsed, received = await receiver
        print(
            f"push: {received}/{backlog} msgs to one mTLS webhook, batches of {args.push_batch},"
            f" {args.push_parallel} in flight:"
            f" {received / elapsed:,.0f} msg/s ({elapsed:.2f} s)"
        )
        push_rate = received / elapsed
        if args.pg:
            # Busbar's webhook-ingest goal is 0.8 of raw batched inserts of the same messages. A
            # push ratio under 0.8 means that benchmark must drive Busbar with its own load
            # generator: dipsim's pushes alone could not show the goal met.
            baseline = pg_baseline.measure(
                conninfo=args.pg,
                bodies=[json.dumps(payload) for payload in payloads[:10_000]],
                rows=min(args.messages, 10_000),
                repeat=3,
            )
            print(pg_baseline.describe(baseline))
            print(
                f"ratios to raw batched inserts: accept {accept_rate / baseline.batched_rows_per_second:.2f},"
                f" push {push_rate / baseline.batched_rows_per_second:.2f}"
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--push-batch", type=int, default=100)
    parser.add_argument("--push-concurrency", type=int, default=16)
    parser.add_argument(
        "--push-parallel", type=int, default=1, help="batches in flight to the one webhook"
    )
    parser.add_argument(
        "--simulated",
        action="store_true",
        help="with the simulated counterparties: the MDS is IF-021's always-recipient and acknowledges each",
    )
    parser.add_argument(
        "--spec-dir", help="validate against the official spec instead of dipsim's own schemas"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_DATABASE_URL", pg_baseline.DEFAULT_CONNINFO),
        help="PostgreSQL for the raw baseline measured in the same run ('' to skip)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
