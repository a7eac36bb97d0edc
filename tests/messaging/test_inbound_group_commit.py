"""Group commit in the ingest server, through its real ASGI app against real PostgreSQL.

Pushes that arrive while a group is being committed are stored together in the next group: one
transaction (its rows share the transaction's ``now()``, their ``created_at``). To make "arrive
while a commit is in flight" happen on cue, the test holds an exclusive lock on the rollup table
from an administrative connection: the group in flight then waits at its statement, which also
increments the rollups (before its commit), while the test queues more pushes, and moves on when
the lock goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import httpx
import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection

from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.inbound import asgi, backlog, receive
from messaging.inbound.asgi import IngestApp
from messaging.models import Message, RawBlob
from tenants import services
from tenants.models import Channel, Connection
from tests.conftest import admin_conninfo, build_world
from tests.messaging.inbound_helpers import BASE_URL, DipSigner, body_of, pushed_if021, trust
from tests.waiting import wait_for

RCP_SUCCESS = "RCP0000 - Message Success"


class RunningApp:
    """The ingest app on an event loop of its own thread, so the test can wait (synchronously)
    for the database while requests are in flight."""

    def __init__(self) -> None:
        self.app = IngestApp()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL, timeout=60
        )

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Future[httpx.Response]:
        path = url.removeprefix(BASE_URL)
        return asyncio.run_coroutine_threadsafe(
            self.client.post(path, content=body, headers=headers), self.loop
        )

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.aclose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.app.committer.stop()
        self.app.executor.shutdown(wait=True)
        self.app.follow_ups.stop()


class Sender:
    """Signed pushes to one inbound channel."""

    def __init__(self, runner: RunningApp, channel: Channel, signer: DipSigner) -> None:
        self.runner = runner
        self.url = f"{BASE_URL}/dip/webhooks/{channel.webhook_token}"
        self.signer = signer

    def push(self, *messages: dict) -> Future[httpx.Response]:
        body = body_of(*messages)
        return self.runner.post(self.url, body, self.signer.headers(self.url, body))


def _admin() -> psycopg.Connection:
    return psycopg.connect(
        admin_conninfo(django_settings.DATABASES["default"]["NAME"]), autocommit=True
    )


@contextlib.contextmanager
def rollups_locked() -> Iterator[psycopg.Connection]:
    """Hold an exclusive lock on the rollup table until the block ends."""
    with _admin() as holder:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE messaging_flow_rollup IN EXCLUSIVE MODE")
        try:
            yield holder
        finally:
            holder.execute("COMMIT")


def blocked_group_backend() -> int | None:
    """The backend of a group waiting on the rollup lock, if one is."""
    with _admin() as admin:
        # From the lock table, not the statement's text: pg_stat_activity keeps only the first
        # kilobyte of a query, and a group's statement names the rollups further on.
        row = admin.execute(
            "SELECT pid FROM pg_locks WHERE relation = 'messaging_flow_rollup'::regclass"
            " AND NOT granted AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else None


def terminate(pid: int) -> None:
    with _admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def _txn(message: dict) -> str:
    return message["payload"]["CommonBlock"]["D0"]["transactionID"]


def _entries(response: httpx.Response) -> list[tuple[str, str]]:
    return [(e["transactionID"], e["message"]) for e in response.json()["messageArray"]]


def _stored(tenant_id) -> tuple[list[str], dict[int, dt.datetime]]:
    """Transaction ids of the tenant's stored messages, and when each raw delivery's transaction
    began (``now()``, the same for every row of one transaction), by delivery id."""
    with tenant_context(tenant_id), connection.cursor() as cursor:
        txns = sorted(Message.objects.values_list("transaction_id", flat=True))
        cursor.execute("SELECT id, created_at FROM messaging_raw")
        return txns, {int(row[0]): row[1] for row in cursor.fetchall()}


def _counted(tenant_id) -> tuple[int, int]:
    """The tenant's received messages as the rollups count them (hourly flow, current state)."""
    with tenant_context(tenant_id), connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(entered), 0) FROM messaging_flow_rollup")
        entered = int(cursor.fetchone()[0])
        cursor.execute("SELECT coalesce(sum(count), 0) FROM messaging_state_count")
        return entered, int(cursor.fetchone()[0])


@pytest.fixture
def ingest(committed_db, settings):
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    settings.BUSBAR_INGEST_BACKLOG_LIMIT = 10**9
    backlog.set_for_tests(0)
    receive.forget_endpoints()
    world = build_world()
    signer = DipSigner()
    with tenant_context(world.acme.id):
        acme_channel = Channel.objects.get(interface_id="IF-021", direction="inbound")
        trust(world.acme.id, acme_channel.connection, signer.ca)
    with tenant_context(world.globex.id):
        globex_connection = Connection.objects.get()
        globex_channel = services.create_channel(
            connection=globex_connection, interface_id="IF-021", direction="inbound"
        )
        trust(world.globex.id, globex_connection, signer.ca)
    runner = RunningApp()
    try:
        yield (
            world,
            runner,
            Sender(runner, acme_channel, signer),
            Sender(runner, globex_channel, signer),
        )
    finally:
        runner.close()
        receive.forget_endpoints()


def _hold_a_group_in_flight(runner: RunningApp, first: Future) -> None:
    wait_for(blocked_group_backend, timeout=30, what="the first group to wait at its rollups")
    assert runner.app.committer.pending == 0
    assert not first.done()


def test_pushes_arriving_during_a_commit_share_the_next_one_and_dedupe_within_and_across(
    ingest,
):
    world, runner, acme, globex = ingest
    m0, m1, m2, m3 = (pushed_if021() for _ in range(4))
    with rollups_locked():
        first = acme.push(m0)
        _hold_a_group_in_flight(runner, first)
        queued = [
            acme.push(m1),
            globex.push(m2),
            acme.push(m1),  # the same DIP transaction id as another push of this group
            acme.push(m0, m3),  # m0 again (stored by the group before), and a new one
        ]
        wait_for(lambda: runner.app.committer.pending == 4, timeout=30, what="4 queued pushes")
        # Nothing is acknowledged while the commit that would store it has not happened.
        assert not any(f.done() for f in [first, *queued])
    answers = [f.result(60) for f in [first, *queued]]
    assert [a.status_code for a in answers] == [201] * 5
    assert _entries(answers[0]) == [(_txn(m0), RCP_SUCCESS)]
    assert _entries(answers[1]) == _entries(answers[3]) == [(_txn(m1), RCP_SUCCESS)]
    assert _entries(answers[2]) == [(_txn(m2), RCP_SUCCESS)]
    assert _entries(answers[4]) == [(_txn(m0), RCP_SUCCESS), (_txn(m3), RCP_SUCCESS)]

    acme_txns, acme_blobs = _stored(world.acme.id)
    globex_txns, globex_blobs = _stored(world.globex.id)
    # every delivery is kept as evidence; each message once, in its own tenant's store
    assert acme_txns == sorted([_txn(m0), _txn(m1), _txn(m3)])
    assert globex_txns == [_txn(m2)]
    assert len(acme_blobs) == 4
    assert len(globex_blobs) == 1
    # the counters count stored messages, not pushes: no duplicate counted
    assert _counted(world.acme.id) == (3, 3)
    assert _counted(world.globex.id) == (1, 1)
    # two transactions: the first push alone, then the four queued behind it, both tenants
    assert len(set(acme_blobs.values())) == 2
    assert len(set(acme_blobs.values()) | set(globex_blobs.values())) == 2
    with tenant_context(world.acme.id):
        later_group = RawBlob.objects.order_by("-id").first()
        assert later_group is not None
        assert acme_blobs[later_group.id] in set(globex_blobs.values())

    # a later push of a stored message: acknowledged the same way, not stored again
    again = acme.push(m1).result(60)
    assert again.status_code == 201
    assert _entries(again) == [(_txn(m1), RCP_SUCCESS)]
    assert _stored(world.acme.id)[0] == acme_txns


def test_a_delivery_the_database_refuses_fails_alone_in_its_group(ingest):
    world, runner, acme, _globex = ingest
    with tenant_context(world.acme.id):
        doomed = services.create_channel(
            connection=Connection.objects.get(), interface_id="IF-031", direction="inbound"
        )
    # Its endpoint is cached (as after an earlier push), then the channel goes away: a push to
    # it verifies against the cache but its rows can no longer reference the channel.
    assert receive._load_endpoint(doomed.webhook_token) is not None
    with tenant_context(world.acme.id):
        Channel.objects.filter(pk=doomed.pk).delete()
    orphan = Sender(runner, doomed, acme.signer)
    m0, m1, m2, m3 = (pushed_if021() for _ in range(4))
    with rollups_locked():
        first = acme.push(m0)
        _hold_a_group_in_flight(runner, first)
        queued = [acme.push(m1), orphan.push(m2), acme.push(m3)]
        wait_for(lambda: runner.app.committer.pending == 3, timeout=30, what="3 queued pushes")
    answers = [f.result(60) for f in [first, *queued]]
    assert [a.status_code for a in answers] == [201, 201, 503, 201]
    assert answers[2].headers["Retry-After"]
    assert answers[2].json()["messageArray"][0]["message"].startswith("RCP1000")
    txns, blobs = _stored(world.acme.id)
    assert txns == sorted([_txn(m0), _txn(m1), _txn(m3)])
    assert len(blobs) == 3
    # The group was refused as a whole, then stored one delivery per transaction: m0's group,
    # then m1 and m3 each on their own, and m2 never.
    assert len(set(blobs.values())) == 3


def test_a_database_failure_during_the_group_commit_answers_503_to_all_and_stores_none(ingest):
    world, runner, acme, globex = ingest
    m0, m1, m2, m3, m4 = (pushed_if021() for _ in range(5))
    with rollups_locked():
        first = acme.push(m0)
        _hold_a_group_in_flight(runner, first)
        first_backend = blocked_group_backend()
        assert first_backend is not None
        queued = [acme.push(m1), globex.push(m2), acme.push(m3)]
        wait_for(lambda: runner.app.committer.pending == 3, timeout=30, what="3 queued pushes")
        terminate(first_backend)  # the database goes away under the first group
        assert first.result(60).status_code == 503
        # The three queued pushes form the next group, on a new connection: it too waits at
        # the rollups, then its connection is killed before it can commit.
        second_backend = wait_for(
            lambda: (pid := blocked_group_backend()) not in (None, first_backend) and pid,
            timeout=30,
            what="the second group to wait at its rollups",
        )
        assert runner.app.committer.pending == 0
        assert not any(f.done() for f in queued)
        terminate(second_backend)
        answers = [f.result(60) for f in queued]
    assert [a.status_code for a in answers] == [503, 503, 503]
    assert all(a.headers["Retry-After"] for a in answers)
    assert _stored(world.acme.id) == ([], {})
    assert _stored(world.globex.id) == ([], {})
    assert _counted(world.acme.id) == _counted(world.globex.id) == (0, 0)
    # the committer recovers: the DIP's retry is stored
    retried = acme.push(m1, m4).result(60)
    assert retried.status_code == 201
    assert _stored(world.acme.id)[0] == sorted([_txn(m1), _txn(m4)])


def test_saturation_still_sheds_with_retry_after_while_groups_commit(ingest, settings):
    world, runner, acme, _globex = ingest
    settings.BUSBAR_INGEST_QUEUE_LIMIT = 0
    runner.app.concurrency = 2  # two requests in flight fill it
    m0, m1, m2 = (pushed_if021() for _ in range(3))
    with rollups_locked():
        first = acme.push(m0)
        _hold_a_group_in_flight(runner, first)
        second = acme.push(m1)
        wait_for(lambda: runner.app.committer.pending == 1, timeout=30, what="a queued push")
        shed = acme.push(m2).result(60)
        assert shed.status_code == 503
        assert shed.headers["Retry-After"] == str(settings.BUSBAR_INGEST_RETRY_AFTER_SECONDS)
    assert [f.result(60).status_code for f in (first, second)] == [201, 201]
    assert _stored(world.acme.id)[0] == sorted([_txn(m0), _txn(m1)])


def test_the_group_answer_lists_every_message_of_a_batch(ingest):
    world, _runner, acme, _globex = ingest
    batch = [pushed_if021() for _ in range(5)]
    answer = acme.push(*batch).result(60)
    assert answer.status_code == 201
    assert _entries(answer) == [(_txn(m), RCP_SUCCESS) for m in batch]
    with tenant_context(world.acme.id):
        blob = RawBlob.objects.get()
        assert blob.message_count == 5
        assert blob.response_status == 201
        assert json.loads(bytes(blob.response_body)) == answer.json()
        assert blob.headers["signer_sha256"]


def _events(tenant_id, action: str) -> list[AuditEvent]:
    with tenant_context(tenant_id):
        return list(AuditEvent.objects.filter(action=action))


def test_a_small_push_to_a_cached_channel_is_prepared_without_a_pool_thread(ingest, monkeypatch):
    world, runner, acme, _globex = ingest
    m0, m1, m2 = (pushed_if021() for _ in range(3))
    assert acme.push(m0).result(60).status_code == 201  # the channel is cached from now on
    handed: list[str] = []
    original = runner.app.executor.submit

    def submit(fn, *args, **kwargs):
        handed.append(args[1])  # the kind of request
        return original(fn, *args, **kwargs)

    monkeypatch.setattr(runner.app.executor, "submit", submit)
    answer = acme.push(m1).result(60)
    assert answer.status_code == 201
    assert _entries(answer) == [(_txn(m1), RCP_SUCCESS)]
    assert handed == []
    # A push the loop would refuse goes to a pool thread, which refuses it and records why.
    body = body_of(m2)
    headers = acme.signer.headers(acme.url, body + b" ")  # signed over other bytes
    refused = runner.post(acme.url, body, headers).result(60)
    assert refused.status_code == 400
    assert refused.json()["messageArray"][0]["message"] == "RCP9999 - Message Signature Invalid"
    assert handed == ["push"]
    [event] = _events(world.acme.id, "webhook.bad_signature")
    assert event.detail["check"] == "hash_mismatch"
    # and so does a push over the in-loop size
    monkeypatch.setattr(asgi, "INLINE_MAX_BYTES", 10)
    again = acme.push(m2).result(60)
    assert again.status_code == 201
    assert handed == ["push", "push"]
    assert _stored(world.acme.id)[0] == sorted([_txn(m0), _txn(m1), _txn(m2)])
