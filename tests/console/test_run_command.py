"""The README's run command, started as a user would, then used through a real browser."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from django.conf import settings

from core.devenv import with_redis_db

ROOT = Path(__file__).resolve().parents[2]
DEMO_PASSWORD = "busbar-demo-pass"
RUN_DATABASE = f"busbar_run_{settings.CHECKOUT_ID}"  # this checkout's own
RUN_REDIS_DB = 3

pytestmark = pytest.mark.slow


def free_port(*, pair: bool = False) -> int:
    """An unused port (and, with ``pair``, the one after it unused too)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port + 1)) != 0 and port < 65535:
                return port


@dataclass
class Running:
    url: str
    dip_admin_url: str


@pytest.fixture(scope="module")
def running_busbar() -> Iterator[Running]:
    """``python -m core.devenv run`` (what ``make run`` calls) on its own database and ports."""
    port, dipsim_port = free_port(), free_port(pair=True)
    redis_url = with_redis_db(os.environ["REDIS_URL"], RUN_REDIS_DB)
    redis.Redis.from_url(redis_url).flushdb()
    # A clean slate: this run's database and simulator state start empty, as on a fresh clone.
    with psycopg.connect(os.environ["BUSBAR_ADMIN_DATABASE_URL"], autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {RUN_DATABASE} WITH (FORCE)")
    shutil.rmtree(ROOT / "var" / "run" / RUN_DATABASE, ignore_errors=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BUSBAR_", "DJANGO_", "PYTEST_"))
    }
    env.update(REDIS_URL=redis_url, DATABASE_URL=os.environ["BUSBAR_ADMIN_DATABASE_URL"])
    log = (ROOT / "var" / "run-command-test.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core.devenv",
            "run",
            "--port",
            str(port),
            "--dipsim-port",
            str(dipsim_port),
            "--database",
            RUN_DATABASE,
            "--traffic-rate",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the run command exited with {process.returncode}; see {log.name}")
            try:
                if httpx.get(url + "readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"the run command never became ready; see {log.name}")
        yield Running(url=url, dip_admin_url=f"http://127.0.0.1:{dipsim_port + 1}")
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the whole group
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        log.close()


def test_the_run_command_serves_readiness(running_busbar):
    body = httpx.get(running_busbar.url + "readyz").json()
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "migrations": "ok", "broker": "ok", "cache": "ok"},
    }


def test_beat_and_a_worker_run_over_redis(running_busbar):
    """Beat's heartbeat goes through Redis to the maintenance worker, which stamps the cache."""
    client = redis.Redis.from_url(with_redis_db(os.environ["REDIS_URL"], RUN_REDIS_DB))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if client.get("busbar:1:busbar:beat-heartbeat") is not None:
            return
        time.sleep(1)
    pytest.fail("no heartbeat from beat through a worker within 90 s")


def sign_in(page, url: str, username: str) -> None:
    page.goto(url + "login/")
    page.fill("#id_username", username)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url)


def test_alice_signs_in_in_a_browser_and_sees_only_acme(running_busbar, browser, tmp_path):
    page = browser.new_page()
    sign_in(page, running_busbar.url, "alice")
    assert page.locator("[data-testid=tenant-name]").inner_text() == "Acme Energy Supply"
    body = page.locator("main").inner_text()
    assert "1000000001" in body
    assert "Globex" not in page.content()
    page.screenshot(path=ROOT / "var" / "alice-home.png", full_page=True)

    # The settings table refreshes in place through htmx, without a page load.
    page.click("text=Settings")
    page.wait_for_url(running_busbar.url + "settings/")
    page.evaluate("window.__marker = 'same page'")
    with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true") as fragment:
        page.click("#channel-table >> xpath=preceding::a[1]")
    assert fragment.value.status == 200
    assert page.evaluate("window.__marker") == "same page"
    assert page.locator("#channel-table tbody tr").count() == 7  # acme's demo channels
    page.close()


def test_charlie_in_a_browser_sees_only_globex(running_busbar, browser):
    page = browser.new_page()
    sign_in(page, running_busbar.url, "charlie")
    assert page.locator("[data-testid=tenant-name]").inner_text() == "Globex Smart Data"
    assert "Acme" not in page.content()
    assert "1000000001" not in page.content()
    page.close()


def test_dipsim_runs_with_demo_traffic_from_the_simulated_market(running_busbar):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        counters = httpx.get(running_busbar.dip_admin_url + "/admin/counters").json()["counters"]
        if counters.get("traffic.sent", 0) >= 3:
            break
        time.sleep(1)
    assert counters.get("traffic.sent", 0) >= 3
    participants = httpx.get(running_busbar.dip_admin_url + "/admin/participants").json()
    assert {"1000000001", "1000000002"} <= {p["dipID"] for p in participants}


def test_alice_rotates_a_certificate_and_the_worker_canaries_it_against_dipsim(
    running_busbar,
    browser,
    tmp_path,
):
    """The whole path: a certificate from dipsim's CA, uploaded in the browser, rotated in by the
    maintenance worker after a canary request that dipsim accepted over mutual TLS."""
    out = tmp_path / "next-signing"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dipsim",
            "ca",
            "issue",
            "--dir",
            str(ROOT / "var" / "dipsim-ca"),
            "--dip-id",
            "1000000001",
            "--kind",
            "signing",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(out.with_suffix(".crt").read_bytes() + out.with_suffix(".key").read_bytes())
    page = browser.new_page()
    sign_in(page, running_busbar.url, "alice")
    page.goto(running_busbar.url + "certificates/")
    page.select_option("#id_purpose", "signing")
    page.set_input_files("#id_bundle", str(bundle))
    page.click("button:text-is('Import')")
    page.wait_for_url("**/certificates/*/")
    assert "Imported; it is staged" in page.content()
    page.click("button:text-is('Rotate with canary')")
    assert "Rotation queued" in page.content()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page.reload()
        if "status-active" in page.content():
            break
        time.sleep(1)
    facts = page.locator(".facts").inner_text()
    assert "Active" in facts
    assert "passed" in facts  # the canary's outcome, recorded on the certificate
    page.goto(running_busbar.url + "certificates/")
    assert page.locator("#certificate-table .status-retiring").count() == 1
    page.screenshot(path=ROOT / "var" / "certificates.png", full_page=True)
    page.close()


def test_no_private_key_or_api_key_appears_in_any_log_of_the_run(running_busbar):
    """Everything the run wrote (web, workers, beat, dipsim and the launcher's own output), after
    sign-ins, page views, an import and a rotation, holds no key material and no API key."""
    logs = [
        *(ROOT / "var" / "run" / RUN_DATABASE).glob("*.log"),
        ROOT / "var" / "run-command-test.log",
    ]
    assert len(logs) >= 7
    forbidden = ["PRIVATE KEY", "dipsim-acme-key", "dipsim-glbx-key"]
    key_files = list((ROOT / "var" / "dipsim-ca").glob("*.key"))
    for key_file in key_files:  # a line of each CA key's body, in case one leaks unframed
        forbidden.append(key_file.read_text().splitlines()[2])
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in forbidden:
            assert secret not in text, f"{secret[:20]}… found in {log.name}"
