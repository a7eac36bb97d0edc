"""End to end with the real processes: dipsim pushes over mutual TLS to Busbar's ingest server
(granian, client certificate required), which stores each push in PostgreSQL; a Celery worker
(Redis broker) validates and normalises. Two tenants, duplicated and reordered pushes: every
message arrives once, in the right tenant's store, and is processed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.devenv import ingest_command, with_redis_db
from core.tenancy import tenant_context
from dipsim import messages as dip
from messaging.inbound import registration
from messaging.models import Message
from tenants import certificates, services
from tenants.models import Connection
from tests.conftest import World, build_world
from tests.messaging.conftest import REPO_ROOT, SDS_DIP_ID, _ready_line, dipsim_cli, run_all
from tests.messaging.processes import stop
from tests.messaging.test_dip_client import if021

ACME, GLOBEX = "1000000001", "1000000002"
# What each tenant's role receives (the DIP refuses a primary recipient of another role): acme, a
# supplier, gets the data service's IF-021; globex, a smart data service, gets acme's IF-041.
RECEIVES = {ACME: "IF-021", GLOBEX: "IF-041"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    world: World
    dipsim_admin: str
    ingest_url: str
    ca_dir: Path
    root: Path


def _wire(tenant_id: object, dip_id: str, base_url: str, ca_dir: Path, root: Path) -> None:
    """The tenant's connection pointed at dipsim, with dipsim-issued credentials."""
    with tenant_context(tenant_id):
        connection = Connection.objects.get(identity__dip_id=dip_id)
        services.update_connection(
            connection=connection, dip_base_url=base_url, api_key=f"key-{dip_id}", actor="e2e"
        )
        certificates.import_certificate(
            connection=connection,
            purpose="trust_anchor",
            data=(ca_dir / "ca.crt").read_bytes(),
            actor="e2e",
        )
        for purpose in ("signing", "mtls"):
            out = root / f"{dip_id}-{purpose}"
            staged = certificates.import_certificate(
                connection=connection,
                purpose=purpose,
                data=out.with_suffix(".crt").read_bytes() + out.with_suffix(".key").read_bytes(),
                actor="e2e",
            )
            certificates.activate_first_certificate(certificate=staged, actor="e2e")
        interface = RECEIVES[dip_id]
        if not connection.channels.filter(interface_id=interface, direction="inbound").exists():
            services.create_channel(
                connection=connection, interface_id=interface, direction="inbound"
            )


@pytest.fixture
def stack(committed_db, settings, tmp_path) -> Iterator[Stack]:
    world = build_world()
    root, ca_dir, data = tmp_path, tmp_path / "ca", tmp_path / "data"
    run_all([dipsim_cli("ca", "init", "--dir", ca_dir)])
    run_all(
        [
            dipsim_cli("ca", "issue", "--dir", ca_dir, "--dip-id", dip_id, "--kind", kind,
                       "--out", root / f"{dip_id}-{purpose}")
            for dip_id in (ACME, GLOBEX)
            for kind, purpose in (("signing", "signing"), ("mtls", "mtls"))
        ]
        + [
            dipsim_cli("ca", "issue", "--dir", ca_dir, "--dip-id", "10000000DC", "--kind",
                       "server", "--san", "127.0.0.1", "--out", root / "ingest")
        ]
    )  # fmt: skip
    for dip_id, mpid, role in (
        (ACME, "ACME", "SUP"),
        (GLOBEX, "GLBX", "SDS"),
        (SDS_DIP_ID, "SDSA", "SDS"),
    ):
        run_all(
            [
                dipsim_cli("participant", "add", "--data-dir", data, "--dip-id", dip_id,
                           "--mpid", mpid, "--role", role, "--api-key", f"key-{dip_id}")
            ]
        )  # fmt: skip
    # Its own Redis database: no other checkout's worker can take these tasks.
    checkout = int(hashlib.sha1(str(REPO_ROOT).encode()).hexdigest()[:4], 16)
    redis_url = with_redis_db(os.environ["REDIS_URL"], 2 + checkout % 13)
    settings.CELERY_BROKER_URL = redis_url
    port = free_port()
    ingest_url = f"https://127.0.0.1:{port}"
    settings.BUSBAR_WEBHOOK_BASE_URL = ingest_url
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "BUSBAR_WEBHOOK_BASE_URL": ingest_url,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    logs = (root / "logs").open("wb")
    procs: list[subprocess.Popen] = []
    try:
        dipsim = subprocess.Popen(
            dipsim_cli("serve", "--data-dir", data, "--ca-dir", ca_dir, "--host", "127.0.0.1",
                       "--port", "0", "--admin-port", "0", "--env", "UIT", "--retry-base", "0.5"),
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=logs,
        )  # fmt: skip
        procs.append(dipsim)
        line = _ready_line(dipsim, timeout=30)
        api = re.search(r"api=(\S+)", line)
        admin = re.search(r"admin=(\S+)", line)
        assert api is not None
        assert admin is not None
        procs.append(
            subprocess.Popen(
                ingest_command(
                    host="127.0.0.1",
                    port=port,
                    certfile=root / "ingest.crt",
                    keyfile=root / "ingest.key",
                    client_ca=ca_dir / "ca.crt",
                ),
                cwd=REPO_ROOT,
                env=env,
                stdout=logs,
                stderr=logs,
                start_new_session=True,  # stopped as a group: granian's workers too
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "core",
                    "worker",
                    "-Q",
                    "inbound,delivery",
                    "--pool",
                    "solo",
                    "-l",
                    "WARNING",
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=logs,
                stderr=logs,
            )
        )
        for tenant, dip_id in ((world.acme.id, ACME), (world.globex.id, GLOBEX)):
            _wire(tenant, dip_id, api.group(1), ca_dir, root)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield Stack(world, admin.group(1), ingest_url, ca_dir, root)
    finally:
        for proc in reversed(procs):
            stop(proc)
        logs.close()


def _log_tail(stack: Stack) -> str:
    lines = (stack.root / "logs").read_text(errors="replace").splitlines()
    return "\n".join(line[:300] for line in lines if '"level": "INFO"' not in line)[-4000:]


def _register(stack: Stack) -> None:
    for tenant_id in (stack.world.acme.id, stack.world.globex.id):
        with tenant_context(tenant_id):
            connection = Connection.objects.select_related("identity").get()
            outcomes = registration.register_webhooks(connection=connection, actor="e2e")
        assert all(o.ok for o in outcomes), outcomes


def _payload(recipient: str, rng: random.Random) -> dict:
    if RECEIVES[recipient] == "IF-021":
        return if021(recipients=(recipient,))
    return dip.if041(
        sender=ACME,
        role="SUP",
        mpan=dip.make_mpan(rng),
        read_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
        rng=rng,
        recipients=[recipient],
    )


def _inject(stack: Stack, recipient: str, count: int) -> list[str]:
    rng = random.Random(f"{recipient}-{count}")
    response = httpx.post(
        f"{stack.dipsim_admin}/admin/inject/{RECEIVES[recipient]}",
        json=[{"payload": _payload(recipient, rng)} for _ in range(count)],
        timeout=30,
    )
    assert response.status_code == 201, response.text[:500]
    return [entry["transactionID"] for entry in response.json()["messageArray"]]


def _held(tenant_id: object) -> list[tuple[str, str]]:
    with tenant_context(tenant_id):
        return list(Message.objects.values_list("transaction_id", "state"))


def test_every_pushed_message_arrives_once_in_the_right_tenant_and_is_processed(stack):
    _register(stack)
    # The DIP pushes some batches twice and reverses the order of others.
    for kind in ("duplicate", "out_of_order"):
        httpx.post(
            f"{stack.dipsim_admin}/admin/faults",
            json={"kind": kind, "direction": "egress", "probability": 0.5},
        ).raise_for_status()
    sent = {ACME: [], GLOBEX: []}
    for _ in range(3):
        sent[ACME] += _inject(stack, ACME, 20)
        sent[GLOBEX] += _inject(stack, GLOBEX, 15)
    expected = {stack.world.acme.id: sent[ACME], stack.world.globex.id: sent[GLOBEX]}
    # Generous: on a loaded 2-core machine the worker's start and first validators take a while.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        held = {tenant: _held(tenant) for tenant in expected}
        if all(
            len(held[t]) >= len(expected[t])
            # valid is committed before normalised, in a transaction of its own: wait for both.
            and all(s not in ("received", "valid") for _, s in held[t])
            for t in expected
        ):
            break
        time.sleep(0.5)
    for tenant, txns in expected.items():
        ids = [txn for txn, _state in held[tenant]]
        assert len(ids) == len(set(ids)), "a message was stored twice"
        assert set(ids) == set(txns), "a message is missing or in the wrong tenant"
        states = {state for _txn, state in held[tenant]}
        assert states == {"normalised"}, f"{states}; logs:\n{_log_tail(stack)}"


def test_the_ingest_server_refuses_a_client_without_the_dips_certificate(stack):
    anonymous = ssl.create_default_context(cafile=str(stack.ca_dir / "ca.crt"))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(
            f"{stack.ingest_url}/dip/webhooks/x", content=b"[]", verify=anonymous, timeout=10
        )
    # With the DIP's client certificate the handshake completes and Busbar answers itself.
    dip = ssl.create_default_context(cafile=str(stack.ca_dir / "ca.crt"))
    dip.load_cert_chain(str(stack.ca_dir / "dip-mtls.crt"), str(stack.ca_dir / "dip-mtls.key"))
    answer = httpx.post(
        f"{stack.ingest_url}/dip/webhooks/unknown-token", content=b"[]", verify=dip, timeout=10
    )
    assert answer.status_code == 404
