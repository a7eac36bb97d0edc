"""Inbound faults with the real processes: dipsim pushing over mutual TLS to the ingest server,
Celery workers, a Redis of the test's own, PostgreSQL, and the sample client that verifies each
event's Standard Webhooks signature. A worker killed with SIGKILL mid-batch, that Redis restarted
mid-run, the ingest server killed after its commit and before its enqueue: once the sweeper has
run, every message is stored once, normalised once (one event each) and delivered once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings

from core.devenv import ingest_command
from core.tenancy import tenant_context
from messaging.events import endpoints
from messaging.events.models import Event
from messaging.events.signing import generate_secret
from messaging.models import Message, Transition
from tests.conftest import World, admin_conninfo, build_world
from tests.messaging.conftest import REPO_ROOT, SDS_DIP_ID, _ready_line, dipsim_cli, run_all
from tests.messaging.processes import (
    PrivateRedis,
    busbar_env,
    free_port,
    run_sweeper,
    sigkill,
    start_worker,
    stop,
)
from tests.messaging.test_inbound_e2e import ACME, GLOBEX, Stack, _inject, _register, _wire
from tests.waiting import wait_for


@dataclass
class FaultStack:
    world: World
    stack: Stack  # what the end-to-end helpers need (world, dipsim's admin URL)
    redis: PrivateRedis
    env: dict[str, str]
    ingest_port: int
    client_port: int
    client_db: Path
    start_ingest: Callable[[str], subprocess.Popen[bytes]]
    start_worker: Callable[[], subprocess.Popen[bytes]]
    log: Path

    @property
    def tenants(self) -> dict[str, object]:
        return {ACME: self.world.acme.id, GLOBEX: self.world.globex.id}


def _client_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def dip_parties(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dipsim's CA, the certificates it issued (the tenants', the ingest server's) and its
    registry of participants, made once for the module (each is a Python start of dipsim's CLI);
    every test copies the registry so that no test sees another's messages."""
    root = tmp_path_factory.mktemp("dip-parties")
    ca_dir, data = root / "ca", root / "data"
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
    return root


@pytest.fixture
def faults(committed_db, settings, tmp_path, dip_parties) -> Iterator[FaultStack]:
    import shutil

    world = build_world()
    root = dip_parties
    ca_dir, data = root / "ca", tmp_path / "data"
    shutil.copytree(root / "data", data)
    log = tmp_path / "logs"
    private = PrivateRedis(tmp_path / "redis")
    private.start()
    ingest_port, client_port = free_port(), free_port()
    ingest_url = f"https://127.0.0.1:{ingest_port}"
    settings.BUSBAR_WEBHOOK_BASE_URL = ingest_url
    settings.BUSBAR_DOWNSTREAM_ALLOW = f"127.0.0.1:{client_port}"
    env = busbar_env(
        private.url,
        BUSBAR_WEBHOOK_BASE_URL=ingest_url,
        BUSBAR_DOWNSTREAM_ALLOW=settings.BUSBAR_DOWNSTREAM_ALLOW,
    )
    secret = generate_secret()
    (tmp_path / "secret").write_text(secret + "\n")
    procs: list[subprocess.Popen[bytes]] = []

    def start_ingest(redis_url: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ingest_command(
                    host="127.0.0.1",
                    port=ingest_port,
                    certfile=root / "ingest.crt",
                    keyfile=root / "ingest.key",
                    client_ca=ca_dir / "ca.crt",
                ),
                cwd=REPO_ROOT,
                env={**env, "REDIS_URL": redis_url},
                stdout=out,
                stderr=out,
                # Its own process group: killing the server kills its worker processes too.
                start_new_session=True,
            )
        procs.append(proc)
        return proc

    def worker() -> subprocess.Popen[bytes]:
        proc = start_worker(env, "inbound,delivery", log)
        procs.append(proc)
        return proc

    try:
        with log.open("ab") as out:
            dipsim = subprocess.Popen(
                dipsim_cli("serve", "--data-dir", data, "--ca-dir", ca_dir, "--host",
                           "127.0.0.1", "--port", "0", "--admin-port", "0", "--env", "UIT",
                           "--retry-base", "0.5"),
                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=out,
            )  # fmt: skip
            procs.append(dipsim)
            client = subprocess.Popen(
                [sys.executable, "-m", "sampleclient", "--port", str(client_port),
                 "--name", "faults", "--secret-file", str(tmp_path / "secret"),
                 "--db", str(tmp_path / "received.sqlite")],
                cwd=REPO_ROOT, stdout=out, stderr=out,
            )  # fmt: skip
            procs.append(client)
        line = _ready_line(dipsim, timeout=30)
        api = re.search(r"api=(\S+)", line)
        admin = re.search(r"admin=(\S+)", line)
        assert api is not None
        assert admin is not None
        for dip_id, tenant in ((ACME, world.acme.id), (GLOBEX, world.globex.id)):
            _wire(tenant, dip_id, api.group(1), ca_dir, root)
            with tenant_context(tenant):
                endpoints.create_endpoint(
                    name="sample client",
                    url=f"http://127.0.0.1:{client_port}/hooks",
                    event_types=["*"],
                    actor="pytest",
                    secret=secret,
                )
        wait_for(lambda: _reachable(client_port), 120, what="the sample client")
        yield FaultStack(
            world=world,
            stack=Stack(world, admin.group(1), ingest_url, ca_dir, tmp_path),
            redis=private,
            env=env,
            ingest_port=ingest_port,
            client_port=client_port,
            client_db=tmp_path / "received.sqlite",
            start_ingest=start_ingest,
            start_worker=worker,
            log=log,
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
        private.kill()


def _reachable(port: int) -> bool:
    try:
        _client_stats(port)
    except OSError:
        return False
    return True


def _ingest_up(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _states(tenant_id: object) -> Counter[str]:
    with tenant_context(tenant_id):
        return Counter(Message.objects.values_list("state", flat=True))


def _log_tail(stack: FaultStack) -> str:
    lines = stack.log.read_text(errors="replace").splitlines()
    return "\n".join(line[:300] for line in lines if '"level": "INFO"' not in line)[-3000:]


def _every_message_delivered(stack: FaultStack, sent: dict[str, list[str]]) -> bool:
    return all(
        _states(stack.tenants[dip_id]) == Counter({"delivered": len(txns)})
        for dip_id, txns in sent.items()
    )


def assert_each_message_once_in_effect(stack: FaultStack, sent: dict[str, list[str]]) -> None:
    """Stored once in its tenant, one normalised event each, each event received once by the
    sample client (its signature verified), nothing refused, nothing redelivered."""
    expected_events: set[str] = set()
    for dip_id, txns in sent.items():
        with tenant_context(stack.tenants[dip_id]):
            held = list(Message.objects.values_list("id", "transaction_id"))
            events = list(Event.objects.values_list("source_message_id", "uid"))
        assert sorted(txn for _id, txn in held) == sorted(txns), "lost, doubled or misplaced"
        per_message = Counter(source for source, _uid in events)
        assert per_message == Counter({mid: 1 for mid, _txn in held}), "not one event each"
        with tenant_context(stack.tenants[dip_id]):
            moves = Counter(Transition.objects.values_list("message_id", "to_state"))
        assert set(moves.values()) == {1}, "a message made the same move twice"
        expected_events |= {f"evt_{uid.hex}" for _source, uid in events}
    stats = _client_stats(stack.client_port)
    assert (stats["duplicates"], stats["refused"]) == (0, 0)
    with closing(sqlite3.connect(stack.client_db)) as db:
        received = [row[0] for row in db.execute("SELECT webhook_id FROM received")]
    assert sorted(received) == sorted(expected_events)


@pytest.fixture
def admin_session() -> Iterator[psycopg.Connection]:
    """A connection of the test's own, past RLS, for the test's hand on the database: holding a
    lock, letting a lease run out."""
    with psycopg.connect(admin_conninfo(django_settings.DATABASES["default"]["NAME"])) as conn:
        yield conn


def _waiting_on_history(admin: psycopg.Connection) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted"
        " AND relation = 'messaging_keyversion'::regclass"
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_worker_killed_mid_batch_and_a_redis_restart_lose_nothing_and_do_nothing_twice(
    faults, admin_session
):
    stack = faults
    ingest = stack.start_ingest(stack.redis.url)
    worker = stack.start_worker()
    wait_for(lambda: _ingest_up(stack.ingest_port), 120, what="the ingest server")
    _register(stack.stack)
    sent: dict[str, list[str]] = {ACME: [], GLOBEX: []}

    # 1. The worker claims acme's delivery (the attempt is committed), validates it, and is
    # killed while writing the batch's outcome: the test holds the business-key history table
    # locked, so the worker is caught in the middle of its transaction, deterministically.
    watcher = psycopg.connect(
        admin_conninfo(django_settings.DATABASES["default"]["NAME"]), autocommit=True
    )
    try:
        admin_session.execute("LOCK TABLE messaging_keyversion IN SHARE MODE")
        first = _inject(stack.stack, ACME, 20)
        sent[ACME] += first
        wait_for(lambda: _waiting_on_history(watcher), 120, what="the worker mid-batch")
        sigkill(worker)
        admin_session.rollback()
    finally:
        watcher.close()
    with tenant_context(stack.world.acme.id):
        at_kill = dict(Message.objects.values_list("transaction_id", "attempts"))
        assert set(Message.objects.values_list("state", flat=True)) == {"received"}
    claimed = [txn for txn, attempts in at_kill.items() if attempts == 1]
    assert claimed, "the dead worker's claim is counted"

    # 2. Redis restarted mid-run: deliveries stored and queued while no worker runs are lost
    # with the broker's memory.
    sent[ACME] += _inject(stack.stack, ACME, 15)
    sent[GLOBEX] += _inject(stack.stack, GLOBEX, 15)
    wait_for(lambda: stack.redis.queued() >= 2, 30, what="the deliveries' tasks in Redis")
    stack.redis.restart()
    assert stack.redis.queued() == 0
    stack.start_worker()
    # Traffic after the restart flows again through the same ingest server and a new worker.
    sent[ACME] += _inject(stack.stack, ACME, 10)
    sent[GLOBEX] += _inject(stack.stack, GLOBEX, 10)
    wait_for(
        lambda: all(_states(t)["delivered"] >= 10 for t in stack.tenants.values()),
        120,
        what=f"traffic after the restart; logs:\n{_log_tail(stack)}",
    )
    # A tenant's round takes every received message that no live claim holds, so the ones whose
    # tasks Redis lost flowed with the later traffic; only the dead worker's claim still waits,
    # until its lease runs out.
    with tenant_context(stack.world.acme.id):
        waiting = set(
            Message.objects.filter(state="received").values_list("transaction_id", flat=True)
        )
    assert waiting == set(claimed)

    # 3. Time passes beyond the dead worker's lease (a controlled clock for that row), and the
    # beat sweeper runs: it hands every stranded message to the workers again.
    admin_session.execute(
        "UPDATE messaging_message SET lease_until = now() - interval '1 second'"
        " WHERE direction = 'inbound' AND state = 'received' AND lease_until IS NOT NULL"
    )
    admin_session.commit()
    run_sweeper(stack.env)
    wait_for(
        lambda: _every_message_delivered(stack, sent),
        120,
        what=f"every message delivered; logs:\n{_log_tail(stack)}",
    )
    assert_each_message_once_in_effect(stack, sent)
    assert ingest.poll() is None


def test_an_ingest_server_killed_after_commit_and_before_enqueue_loses_nothing(faults):
    stack = faults
    # The first ingest server stores and acknowledges, but can never enqueue (its broker is
    # not there), and is then killed: committed rows, no task, no process.
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    first_ingest = stack.start_ingest(nowhere)
    stack.start_worker()
    wait_for(lambda: _ingest_up(stack.ingest_port), 120, what="the ingest server")
    _register(stack.stack)
    sent = {ACME: _inject(stack.stack, ACME, 12), GLOBEX: _inject(stack.stack, GLOBEX, 8)}
    for dip_id, txns in sent.items():
        wait_for(
            lambda dip_id=dip_id, txns=txns: (
                sum(_states(stack.tenants[dip_id]).values()) == len(txns)
            ),
            120,
            what=f"{dip_id}'s pushes acknowledged",
        )
    sigkill(first_ingest)
    assert _states(stack.world.acme.id) == Counter({"received": 12})
    assert _states(stack.world.globex.id) == Counter({"received": 8})

    # A new ingest server takes the DIP's next pushes; the sweeper finds what the dead one left.
    stack.start_ingest(stack.redis.url)
    wait_for(lambda: _ingest_up(stack.ingest_port), 120, what="the second ingest server")
    sent[ACME] += _inject(stack.stack, ACME, 5)
    run_sweeper(stack.env)
    wait_for(
        lambda: _every_message_delivered(stack, sent),
        120,
        what=f"every message delivered; logs:\n{_log_tail(stack)}",
    )
    assert_each_message_once_in_effect(stack, sent)


def test_broken_pushes_are_refused_evidenced_and_their_messages_arrive_once_when_requeued(faults):
    """dipsim pushes batches broken (a corrupted signature, a signature by an expired DIP
    certificate, a truncated body): the ingest server refuses each, stores none of it and keeps
    the request's hash and headers as a security event; dipsim parks them. Busbar asks the DIP
    to requeue those messages, and they arrive, are processed and delivered once."""
    import httpx

    from core.models import AuditEvent
    from messaging import credentials
    from tenants.models import Connection

    stack = faults
    stack.start_ingest(stack.redis.url)
    stack.start_worker()
    wait_for(lambda: _ingest_up(stack.ingest_port), 120, what="the ingest server")
    _register(stack.stack)
    actions = ("webhook.bad_signature", "webhook.malformed")

    def refusals() -> list[AuditEvent]:
        with tenant_context(stack.world.acme.id):
            return list(AuditEvent.objects.filter(action__in=actions).order_by("occurred_at"))

    broken: list[str] = []
    for n, kind in enumerate(("bad_signature", "expired_signature", "malformed"), start=1):
        httpx.post(
            f"{stack.stack.dipsim_admin}/admin/faults",
            json={"kind": kind, "direction": "egress", "dip_id": ACME, "remaining": 1},
        ).raise_for_status()
        broken += _inject(stack.stack, ACME, 2)
        wait_for(lambda n=n: len(refusals()) == n, 120, what=f"the {kind} push refused")
    assert [r.action for r in refusals()] == [
        "webhook.bad_signature",
        "webhook.bad_signature",
        "webhook.malformed",
    ]
    for refusal in refusals():
        assert refusal.category == "security"
        assert len(refusal.detail["body_sha256"]) == 64
        assert any(name.lower().startswith("x-dip-") for name in refusal.detail["headers"])
    assert _states(stack.world.acme.id) == Counter()  # nothing of a refused push is stored

    sent = {ACME: [*broken, *_inject(stack.stack, ACME, 3)]}
    wait_for(
        lambda: _states(stack.world.acme.id)["delivered"] == 3,
        120,
        what=f"the next push; logs:\n{_log_tail(stack)}",
    )
    with tenant_context(stack.world.acme.id):
        connection = Connection.objects.select_related("identity").get()
        answer = credentials.dip_client_for(connection=connection).requeue(
            "IF-021", ACME, transaction_ids=broken
        )
    assert answer.status == 200, answer
    wait_for(
        lambda: _every_message_delivered(stack, sent),
        120,
        what=f"the requeued messages delivered; logs:\n{_log_tail(stack)}",
    )
    assert_each_message_once_in_effect(stack, sent)
