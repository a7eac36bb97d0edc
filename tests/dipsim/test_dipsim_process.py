"""dipsim as a real process driven by its CLI: idempotent set-up commands, the ready line, and state
that survives a restart (registry, messages for replay, sender references, faults, counters)."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT

from dipsim import messages
from dipsim.client import DipClient

SUP, SDS = "1100000001", "3100000001"


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dipsim", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, data: Path, ca: Path) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dipsim", "serve", "--data-dir", str(data), "--ca-dir", str(ca),
             "--port", str(self.port), "--admin-port", str(self.admin_port), "--simulated"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
        )  # fmt: skip
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        self.ready = ""
        while time.monotonic() < deadline and not self.ready:
            if selector.select(timeout=0.5):
                line = self.process.stdout.readline()
                if not line:
                    break
                if line.startswith("dipsim ready:"):
                    self.ready = line
        assert self.ready, "dipsim did not print its ready line"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=15) == 0


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca, data, creds = tmp_path / "ca", tmp_path / "data", tmp_path / "creds"
    for _ in range(2):  # every set-up command is idempotent
        cli("ca", "init", "--dir", str(ca))
        cli("dcp", "add", "--data-dir", str(data), "--dip-id", "9100000001", "--api-key", "key-dcp")
        cli("participant", "add", "--data-dir", str(data), "--dip-id", SUP, "--mpid", "ACMX", "--role", "SUP",
            "--api-key", "key-sup", "--dcp-id", "9100000001")  # fmt: skip
        cli("participant", "add", "--data-dir", str(data), "--dip-id", SDS, "--mpid", "SDSX", "--role", "SDS",
            "--api-key", "key-sds")  # fmt: skip
    cli(
        "ca",
        "issue",
        "--dir",
        str(ca),
        "--dip-id",
        SDS,
        "--kind",
        "mtls",
        "--out",
        str(creds / "sds-mtls"),
    )
    cli(
        "ca",
        "issue",
        "--dir",
        str(ca),
        "--dip-id",
        SDS,
        "--kind",
        "signing",
        "--out",
        str(creds / "sds-sign"),
    )
    assert oct((creds / "sds-sign.key").stat().st_mode)[-3:] == "600"
    listed = cli("participant", "list", "--data-dir", str(data))
    assert f"{SUP} ACMX SUP participant UIT dcp=9100000001" in listed
    return ca, data, creds


def test_state_survives_a_restart(setup: tuple[Path, Path, Path]) -> None:
    ca, data, creds = setup
    server = Server(data, ca)
    try:
        assert f"https://127.0.0.1:{server.port}" in server.ready
        client = DipClient.from_files(
            f"https://127.0.0.1:{server.port}", "key-sds", ca_file=ca / "ca.crt",
            mtls_prefix=creds / "sds-mtls", signing_prefix=creds / "sds-sign",
        )  # fmt: skip
        rng = random.Random(1)
        payload = messages.if021(
            sender=SDS,
            mpan=messages.make_mpan(rng),
            day=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
            rng=rng,
            recipients=[SUP],
        )
        first = client.send("IF-021", [payload])
        assert first.status_code == 201, first.text
        txn = first.json()["messageArray"][0]["transactionID"]
        assert (
            httpx.post(
                f"{server.admin}/admin/faults", json={"kind": "latency", "params": {"ms": 1}}
            ).status_code
            == 201
        )
        log = cli("log", "--admin-url", server.admin)
        assert txn in log
        # No wait for the once-a-second flush: a stopping dipsim flushes its counters itself.
    finally:
        server.stop()

    server = Server(data, ca)
    try:
        client.base_url = f"https://127.0.0.1:{server.port}"
        again = client.send("IF-021", [payload])
        assert again.json()["messageArray"][0]["message"].startswith("MSG1006")
        replay = client.request(
            "POST", f"/dip-channel/IF-021/replay/{SUP}",
            {"datetimeFrom": None, "datetimeTo": None, "eventCode": None, "MPAN": None, "version": None},
        )  # fmt: skip
        # SDS is not SUP: replay is for the recipient only.
        assert replay.status_code == 403
        detail = httpx.get(f"{server.admin}/admin/messages/{txn}").json()
        assert detail["payload"]["CommonBlock"]["D0"]["transactionID"] == txn
        assert [d["state"] for d in detail["deliveries"] if d["recipient"] == SUP] == ["waiting"]
        faults = json.loads(cli("fault", "list", "--admin-url", server.admin))["faults"]
        assert [f["kind"] for f in faults] == ["latency"]
        counters = json.loads(cli("counters", "--admin-url", server.admin))["counters"]
        assert counters["ingress.accepted_messages"] == 1  # the resend was refused
        page = httpx.get(server.admin + "/")
        assert page.status_code == 200
        assert txn in page.text
    finally:
        server.stop()
