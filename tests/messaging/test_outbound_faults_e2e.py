"""Outbound with the real processes: Celery workers started by the test on a Redis of its own,
sending over mutual TLS to a real dipsim. The outbound tasks work under a real worker; a worker
killed with SIGKILL mid-send and that Redis restarted mid-run leave work the sweeper completes,
and nothing reaches the DIP twice without Busbar recording why (a resend carries the same sender
reference and the DIP's MSG1006 duplicate answer is on the timeline).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings as django_settings

from core.tenancy import tenant_context
from messaging import credentials
from messaging.models import Message
from messaging.outbound import services as outbound
from tests.conftest import admin_conninfo
from tests.messaging.processes import (
    PrivateRedis,
    busbar_env,
    enqueueing_on,
    run_sweeper,
    sigkill,
    start_worker,
    stop,
)
from tests.messaging.test_outbound import (
    fault,
    held_by_dipsim,
    outbound_channel,
    references,
    states,
    submission,
    timeline,
    valid_mpan,
)
from tests.waiting import wait_for


@dataclass
class Outbound:
    redis: PrivateRedis
    env: dict[str, str]
    log: Path


@pytest.fixture
def processes(committed_world, dipsim, tmp_path) -> Iterator[Outbound]:
    credentials.DIP_CLIENTS.clear()
    httpx.delete(f"{dipsim.admin_url}/admin/faults")
    private = PrivateRedis(tmp_path / "redis")
    private.start()
    try:
        with enqueueing_on(private.url):
            yield Outbound(private, busbar_env(private.url), tmp_path / "logs")
    finally:
        private.kill()
        httpx.delete(f"{dipsim.admin_url}/admin/faults")
        credentials.DIP_CLIENTS.clear()


def _held_references(dipsim) -> set[str]:
    return {m["senderUniqueReference"] for m in held_by_dipsim(dipsim)}


def _blocked(watch: psycopg.Connection) -> bool:
    """Whether another session of the test database waits for a lock."""
    row = watch.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchone()
    return bool(row and row[0])


def _log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(line[:300] for line in lines if '"level": "INFO"' not in line)[-3000:]


def test_the_outbound_tasks_prepare_and_send_under_a_real_worker(
    committed_world, dipsim, processes
):
    tenant = committed_world.globex.id
    channel = outbound_channel(tenant, dipsim)
    worker = start_worker(processes.env, "outbound", processes.log)
    try:
        with tenant_context(tenant):
            ids = outbound.submit_messages(
                channel=channel,
                items=[submission(mpan=valid_mpan(n)) for n in range(1, 4)],
                actor="crm",
            )
        wait_for(
            lambda: states(tenant, ids) == ["sent"] * 3,
            120,
            what=f"the worker's prepare and send; logs:\n{_log_tail(processes.log)}",
        )
    finally:
        stop(worker)
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert [held[r] for r in references(tenant, ids)] == [1, 1, 1]
    for message_id in ids:
        assert [to for _from, to, _reason in timeline(tenant, message_id)] == [
            "ready",
            "sending",
            "sent",
        ]


def test_a_worker_killed_mid_send_and_a_redis_restart_leave_work_the_sweeper_completes(
    committed_world, dipsim, processes
):
    tenant = committed_world.globex.id
    channel = outbound_channel(tenant, dipsim)
    # The worker is killed after the DIP has accepted its request and before Busbar has recorded
    # the answer: dipsim takes its time over the request (long enough for the test to lay its
    # hand on the message's row), the worker reads the 201 and blocks on that row, and dies.
    fault(dipsim, kind="latency", channel="IF-021", remaining=1, params={"ms": 8000})
    worker = start_worker(processes.env, "outbound", processes.log)
    with tenant_context(tenant):
        [killed] = outbound.submit_messages(
            channel=channel, items=[submission(mpan=valid_mpan(11))], actor="crm"
        )
    database = admin_conninfo(django_settings.DATABASES["default"]["NAME"])
    with psycopg.connect(database) as hand, psycopg.connect(database, autocommit=True) as watch:
        wait_for(
            lambda: states(tenant, [killed]) == ["sending"],
            120,
            what=f"the worker's claim; logs:\n{_log_tail(processes.log)}",
        )
        [reference] = references(tenant, [killed])  # given when the worker prepared it
        hand.execute("SELECT 1 FROM messaging_message WHERE id = %s FOR UPDATE", [killed])
        wait_for(
            lambda: _blocked(watch) and reference in _held_references(dipsim),
            120,
            what="the DIP's acceptance, and the worker blocked recording it",
        )
        sigkill(worker)
        hand.rollback()
    assert states(tenant, [killed]) == ["sending"]

    # Redis restarted while submissions wait in it for a worker: their tasks are lost.
    with tenant_context(tenant):
        lost = outbound.submit_messages(
            channel=channel,
            items=[submission(mpan=valid_mpan(n)) for n in (12, 13)],
            actor="crm",
        )
    wait_for(lambda: processes.redis.queued() >= 1, 30, what="the prepare task in Redis")
    processes.redis.restart()
    worker = start_worker(processes.env, "outbound", processes.log)
    try:
        assert states(tenant, [killed, *lost]) == ["sending", "accepted", "accepted"]
        # Time passes beyond the dead worker's lease (a controlled clock for that row), and the
        # beat sweeper runs.
        with psycopg.connect(admin_conninfo(django_settings.DATABASES["default"]["NAME"])) as db:
            db.execute(
                "UPDATE messaging_message SET lease_until = now() - interval '1 second'"
                " WHERE id = %s",
                [killed],
            )
        run_sweeper(processes.env)
        wait_for(
            lambda: states(tenant, [killed, *lost]) == ["sent"] * 3,
            120,
            what=f"the sweeper's work done; logs:\n{_log_tail(processes.log)}",
        )
    finally:
        stop(worker)
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert [held[r] for r in references(tenant, [killed, *lost])] == [1, 1, 1]
    # The resend went with the same reference; the DIP's duplicate answer is why it counts as sent.
    moves = timeline(tenant, killed)
    assert [(f, t) for f, t, _reason in moves] == [
        ("accepted", "ready"),
        ("ready", "sending"),
        ("sending", "ready"),
        ("ready", "sending"),
        ("sending", "sent"),
    ]
    assert "worker lost" in moves[2][2]
    assert "duplicate" in moves[-1][2]
    with tenant_context(tenant):
        assert Message.objects.get(id=killed).sender_unique_reference == reference
    for message_id in lost:
        assert all("duplicate" not in reason for _f, _t, reason in timeline(tenant, message_id))
