"""Busbar's send leg against dipsim: signed, mutually authenticated IF-021 submissions per second
through Busbar's own DIP client (the pooled ``messaging.dip.DipClient`` the outbound worker uses),
batched and one per request, with the share of the sender's CPU spent signing, as ratios to the
raw-PostgreSQL baseline of the same bytes measured in the same run.

What it leaves out, so the figures are read right: the outbound worker's database steps (claim,
state moves, the final bytes' blob, the exchange evidence). Those are the store's set-based
statements; a full-pipeline figure needs the test database and is the next benchmark to add.

    .venv/bin/python bench/outbound_bench.py --messages 10000 --batch 100 --senders 4

Prints figures; asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import pg_baseline  # noqa: E402
from bench.dipsim_bench import SDS, SUP, free_port, make_payloads, start_dipsim  # noqa: E402
from dipsim import pki  # noqa: E402
from dipsim.store import Store  # noqa: E402
from messaging.dip import client as dip_client  # noqa: E402
from messaging.dip import signing  # noqa: E402


class SigningMeter:
    """Wraps the client's ``sign_request`` to add up the CPU time spent signing (all threads)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.lock = threading.Lock()
        self.original = dip_client.sign_request

    def __enter__(self) -> SigningMeter:
        def timed(**kwargs: object) -> dict[str, str]:
            started = time.thread_time()
            try:
                return self.original(**kwargs)  # type: ignore[arg-type]
            finally:
                spent = time.thread_time() - started
                with self.lock:
                    self.seconds += spent

        dip_client.sign_request = timed
        return self

    def __exit__(self, *exc: object) -> None:
        dip_client.sign_request = self.original


def run(
    client: dip_client.DipClient, bodies: list[list[bytes]], senders: int
) -> tuple[float, float, int]:
    """Send every batch from ``senders`` threads; return (wall seconds, CPU seconds, failures)."""
    queue = list(reversed(bodies))
    lock = threading.Lock()
    failures = 0

    def sender() -> None:
        nonlocal failures
        while True:
            with lock:
                if not queue:
                    return
                batch = queue.pop()
            result = client.submit("IF-021", batch)
            if result.status != 201:
                with lock:
                    failures += 1

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    cpu = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, time.process_time() - cpu, failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--spec-dir", help="dipsim validates with the official spec")
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_DATABASE_URL", pg_baseline.DEFAULT_CONNINFO),
        help="PostgreSQL for the raw baseline measured in the same run ('' to skip)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="outbound-bench-"))
    ca, data, creds = work / "ca", work / "data", work / "creds"
    pki.init_ca(ca)
    pki.issue_to_files(ca, dip_ids=[SDS], kind="mtls", out=creds / "sds-mtls")
    pki.issue_to_files(ca, dip_ids=[SDS], kind="signing", out=creds / "sds-sign")
    store = Store(data)
    store.upsert_participant(dip_id=SUP, mpid="ACME", role="SUP", api_key="key-sup")
    store.upsert_participant(dip_id=SDS, mpid="SDSB", role="SDS", api_key="key-sds")
    store.close()
    port, admin_port = free_port(), free_port()
    extra = ["--spec-dir", args.spec_dir] if args.spec_dir else []
    process = start_dipsim(data, ca, port, admin_port, extra)
    try:
        client = dip_client.DipClient(
            base_url=f"https://127.0.0.1:{port}",
            api_key="key-sds",
            mtls_certificate_pem=(creds / "sds-mtls.crt").read_bytes(),
            mtls_private_key_pem=(creds / "sds-mtls.key").read_bytes(),
            signing_certificate_pem=(creds / "sds-sign.crt").read_bytes(),
            signing_private_key_pem=(creds / "sds-sign.key").read_bytes(),
            server_ca_pem=(ca / "ca.crt").read_bytes(),
            max_connections=args.senders,
        )
        total = args.messages + args.single + 200
        payloads = [
            json.dumps(p, separators=(",", ":")).encode()
            for p in make_payloads(total, seed=int(time.time()))
        ]
        print(
            f"IF-021 message size: {len(payloads[0])} bytes; CPUs: {len(os.sched_getaffinity(0))}"
        )
        run(client, [payloads[:200]], 1)  # warm-up: validators compiled, connections open
        batched = [
            payloads[i : i + args.batch] for i in range(200, 200 + args.messages, args.batch)
        ]
        single = [[p] for p in payloads[200 + args.messages :]]
        figures = {}
        for name, bodies in (("batched", batched), ("single", single)):
            with SigningMeter() as meter:
                wall, cpu, failures = run(client, bodies, args.senders)
            count = sum(len(b) for b in bodies)
            figures[name] = count / wall
            print(
                f"{name}: {count} msgs in {len(bodies)} requests from {args.senders} senders:"
                f" {count / wall:,.0f} msg/s ({wall:.2f} s, {failures} failed);"
                f" signing {meter.seconds:.2f} s CPU = {meter.seconds / cpu:.0%} of this"
                f" process's CPU, {meter.seconds / len(bodies) * 1000:.2f} ms per request"
            )
        client.close()
        key_bits = signing.load_private_key((creds / "sds-sign.key").read_bytes()).key_size
        print(f"signing key: RSA-{key_bits}")
        if args.pg:
            baseline = pg_baseline.measure(
                conninfo=args.pg,
                bodies=[payload.decode() for payload in payloads[:10_000]],
                rows=min(args.messages, 10_000),
                repeat=3,
            )
            print(pg_baseline.describe(baseline))
            print(
                "ratios to raw PostgreSQL:"
                f" batched {figures['batched'] / baseline.batched_rows_per_second:.2f}"
                f" (of batched inserts), single {figures['single'] / baseline.single_rows_per_second:.2f}"
                " (of single-row commits)"
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
