"""The sample client system as a real process: Busbar delivers to it, it verifies each request
with ``standardwebhooks``, ignores redeliveries by webhook-id and refuses bad signatures."""

from __future__ import annotations

import ast
import datetime as dt
import json
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.tenancy import tenant_context
from dipsim import messages as dip
from messaging.events import delivery, endpoints, services
from messaging.events.models import Delivery
from messaging.events.signing import generate_secret
from tests.conftest import build_world

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=5) as response:
        return json.load(response)


@pytest.fixture
def sample_client(tmp_path) -> Iterator[tuple[int, str]]:
    port = free_port()
    secret = generate_secret()
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "sampleclient", "--port", str(port), "--name", "acme",
         "--secret-file", str(secret_file), "--db", str(tmp_path / "received.sqlite")],
        cwd=ROOT,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                stats(port)
                break
            except OSError:
                time.sleep(0.1)
        yield port, secret
    finally:
        process.terminate()
        process.wait(10)


def test_busbar_delivers_to_the_sample_client_which_verifies_and_dedupes(
    committed_db, settings, sample_client
):
    port, secret = sample_client
    world = build_world()
    settings.BUSBAR_DOWNSTREAM_ALLOW = f"127.0.0.1:{port}"
    with tenant_context(world.acme.id):
        endpoints.create_endpoint(
            name="sample",
            url=f"http://127.0.0.1:{port}/hooks",
            event_types=["*"],
            actor="pytest",
            secret=secret,
        )
    rng = random.Random(1)
    messages = [
        (
            n,
            dip.if021(
                sender="1000000002", mpan=dip.make_mpan(rng), day=dt.date(2026, 11, 1), rng=rng
            ),
        )
        for n in range(1, 4)
    ]
    services.record_events(tenant_id=world.acme.id, messages=messages)
    assert delivery.deliver_due(tenant_id=world.acme.id).delivered == 3
    # At-least-once: deliver one again (as after a lost answer); the client ignores it.
    with tenant_context(world.acme.id):
        Delivery.objects.filter(id=Delivery.objects.order_by("id").first().id).update(
            state="pending"
        )
    assert delivery.deliver_due(tenant_id=world.acme.id).delivered == 1
    seen = stats(port)
    assert seen["received"] == 3
    assert seen["by_type"] == {"consumption.recorded": 3}
    assert seen["duplicates"] == 1
    # A request signed with another secret is refused.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks",
        data=b"{}",
        headers={
            "webhook-id": "evt_x",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,AAAA",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert stats(port)["refused"] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
        assert b"3 events" in page.read()


def test_the_sample_client_imports_nothing_of_busbar():
    busbar = {"core", "tenants", "messaging", "console", "dipsim"}
    for source in (ROOT / "sampleclient").glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            assert not {n.split(".")[0] for n in names} & busbar, f"{source.name} imports {names}"


def test_the_sample_client_takes_batches_and_dedupes_each_event(
    committed_db, settings, sample_client
):
    port, secret = sample_client
    world = build_world()
    settings.BUSBAR_DOWNSTREAM_ALLOW = f"127.0.0.1:{port}"
    with tenant_context(world.acme.id):
        endpoints.create_endpoint(
            name="sample",
            url=f"http://127.0.0.1:{port}/hooks",
            event_types=["*"],
            actor="pytest",
            secret=secret,
            events_per_request=50,
        )
    rng = random.Random(2)
    messages = [
        (
            n,
            dip.if021(
                sender="1000000002", mpan=dip.make_mpan(rng), day=dt.date(2026, 11, 1), rng=rng
            ),
        )
        for n in range(1, 121)
    ]
    services.record_events(tenant_id=world.acme.id, messages=messages)
    assert delivery.deliver_due(tenant_id=world.acme.id, limit=200).delivered == 120
    # A batch delivered again (as after a lost answer): every event in it is a redelivery.
    with tenant_context(world.acme.id):
        again = list(Delivery.objects.order_by("id").values_list("id", flat=True)[:5])
        Delivery.objects.filter(id__in=again).update(state="pending")
    assert delivery.deliver_due(tenant_id=world.acme.id).delivered == 5
    seen = stats(port)
    assert seen["received"] == 120
    assert seen["duplicates"] == 5
    assert seen["refused"] == 0
