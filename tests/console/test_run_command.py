"""The README's run command, started as a user would, then used through Debian's chromium;
and a scan of everything the run wrote and answered for every secret it was given. One run serves
every test here (starting one takes about a minute).

In the browser, each demo role signs in and sees only the areas it may open, is refused the
others, sees MPANs masked or not by its content rights; the overview refreshes itself in place;
the keyboard reaches everything from a skip link. Screenshots of the overview and a message page
are saved under ``var/artefacts/browser/`` (in the checkout), where CI keeps them as artefacts.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django_otp.oath import totp
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core import crypto
from tenants.certificates import key_context
from tenants.models import Certificate
from tenants.services import api_key_context
from tests.redis_keys import delete_prefixed
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEMO_PASSWORD = "busbar-demo-pass"
# This checkout's own database and Redis keys: a run here never touches another checkout's.
RUN_DATABASE = f"busbar_run_{settings.CHECKOUT_ID}"
RUN_REDIS_PREFIX = f"run_{settings.CHECKOUT_ID}:"
LAUNCHER_LOG = ROOT / "var" / f"run-command-test-{settings.CHECKOUT_ID}.log"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


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
    kek: str  # the key-encryption key this run was given (so the secrets scan knows it)
    # Every HTTP answer the tests received from the run: (what, headers and body as text).
    answers: list[tuple[str, str]] = field(default_factory=list)

    def http(self) -> httpx.Client:
        """An HTTP client whose every answer is kept for the secrets scan."""

        def keep(response: httpx.Response) -> None:
            response.read()
            self.answers.append(
                (
                    f"{response.request.method} {response.request.url}",
                    f"{response.headers}\n{response.text}",
                )
            )

        return httpx.Client(event_hooks={"response": [keep]}, timeout=30)

    def page(self, browser):
        """A browser page whose every answer is kept for the secrets scan."""
        page = browser.new_page()

        def keep(response) -> None:
            try:
                body = response.body().decode(errors="replace")
            except Exception:  # a redirect, or a body the browser already dropped
                body = ""
            self.answers.append((f"browser {response.url}", f"{response.all_headers()}\n{body}"))

        page.on("response", keep)
        return page


def run_logs() -> list[Path]:
    """Everything the run wrote: web, workers, beat, dipsim and the launcher's own output."""
    return [*(ROOT / "var" / "run" / RUN_DATABASE).glob("*.log"), LAUNCHER_LOG]


@pytest.fixture(scope="module")
def running_busbar() -> Iterator[Running]:
    """``python -m core.devenv run`` (what ``make run`` calls) on its own database, Redis keys
    and ports. After it stops, everything it wrote is scanned once more for the secrets."""
    port, dipsim_port = free_port(), free_port(pair=True)
    redis_client = redis.Redis.from_url(os.environ["REDIS_URL"])
    delete_prefixed(redis_client, RUN_REDIS_PREFIX)
    # A clean slate: this run's database and simulator state start empty, as on a fresh clone.
    with psycopg.connect(os.environ["BUSBAR_ADMIN_DATABASE_URL"], autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {RUN_DATABASE} WITH (FORCE)")
    shutil.rmtree(ROOT / "var" / "run" / RUN_DATABASE, ignore_errors=True)
    kek = "scan1:" + base64.b64encode(os.urandom(32)).decode()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BUSBAR_", "DJANGO_", "PYTEST_"))
    }
    env.update(
        REDIS_URL=os.environ["REDIS_URL"],
        BUSBAR_REDIS_PREFIX=RUN_REDIS_PREFIX,
        DATABASE_URL=os.environ["BUSBAR_ADMIN_DATABASE_URL"],
        BUSBAR_KEKS=kek,
        # Every line reaches its log file at once, so a scan during the run sees it all.
        PYTHONUNBUFFERED="1",
    )
    log = LAUNCHER_LOG.open("wb")
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

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the run command exited with {process.returncode}; see {log.name}")
        try:
            return httpx.get(url + "readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    running = Running(url=url, dip_admin_url=f"http://127.0.0.1:{dipsim_port + 1}", kek=kek)
    try:
        # Generous: on a shared 2-core machine under load, migrations and ten processes take minutes.
        wait_for(ready, timeout=420, what=f"the run command to be ready (see {log.name})", poll=1)
        yield running
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the whole group
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        finally:
            log.close()
            delete_prefixed(redis_client, RUN_REDIS_PREFIX)
    # Stopped: the shutdown's own lines are in the logs now too.
    assert_no_secret_leaked(running, seeded_secrets(running))


def test_the_run_command_serves_readiness(running_busbar):
    body = running_busbar.http().get(running_busbar.url + "readyz").json()
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "migrations": "ok", "broker": "ok", "cache": "ok"},
    }


def test_beat_and_a_worker_run_over_redis(running_busbar):
    """Beat's heartbeat goes through Redis to the maintenance worker, which stamps the cache
    (under this run's own key prefix)."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    wait_for(
        lambda: client.get(f"{RUN_REDIS_PREFIX}busbar:1:busbar:beat-heartbeat"),
        timeout=90,
        what="a heartbeat from beat through a worker",
        poll=1,
    )


def sign_in(page, url: str, username: str) -> None:
    page.goto(url + "login/")
    page.fill("#id_username", username)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url)


def test_alice_signs_in_in_a_browser_and_sees_only_acme(running_busbar, browser, tmp_path):
    page = running_busbar.page(browser)
    sign_in(page, running_busbar.url, "alice")
    assert page.locator("[data-testid=tenant-name]").inner_text() == "Acme Energy Supply"
    body = page.locator("main").inner_text()
    assert "1000000001" in body
    assert "Globex" not in page.content()
    page.screenshot(path=ROOT / "var" / "alice-home.png", full_page=True)

    # The settings table refreshes in place through htmx, without a page load.
    page.click("text=Settings")
    page.wait_for_url(running_busbar.url + "settings/")
    rows = page.locator("#channel-table tbody tr")
    before = rows.all_inner_texts()
    page.evaluate("window.__marker = 'same page'")
    with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true") as fragment:
        page.click("#channel-table >> xpath=preceding::a[1]")
    assert fragment.value.status == 200
    assert page.evaluate("window.__marker") == "same page"
    # The refreshed table shows the same channels, all acme's (IF-nnn rows, none of globex's).
    assert rows.all_inner_texts() == before
    assert before
    assert all(re.search(r"IF-\d{3}", row) for row in before)
    assert "Globex" not in page.content()
    page.close()


def test_charlie_in_a_browser_sees_only_globex(running_busbar, browser):
    page = running_busbar.page(browser)
    sign_in(page, running_busbar.url, "charlie")
    assert page.locator("[data-testid=tenant-name]").inner_text() == "Globex Smart Data"
    assert "Acme" not in page.content()
    assert "1000000001" not in page.content()
    page.close()


def test_dipsim_runs_with_demo_traffic_from_the_simulated_market(running_busbar):
    http = running_busbar.http()
    wait_for(
        lambda: (
            http.get(running_busbar.dip_admin_url + "/admin/counters")
            .json()["counters"]
            .get("traffic.sent", 0)
            >= 3
        ),
        timeout=60,
        what="three messages of demo traffic",
        poll=1,
    )
    participants = http.get(running_busbar.dip_admin_url + "/admin/participants").json()
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
    page = running_busbar.page(browser)
    sign_in(page, running_busbar.url, "alice")
    page.goto(running_busbar.url + "certificates/")
    # The demo's UIT connection, whose signing certificate is active (acme also has a PRD one).
    uit = page.locator("#import_connection option", has_text="UIT").first.get_attribute("value")
    page.select_option("#import_connection", uit)
    page.select_option("#import_purpose", "signing")
    page.set_input_files("#import_bundle", str(bundle))
    page.click("button:text-is('Import')")
    page.wait_for_url("**/certificates/*/")
    assert "Imported; it is staged" in page.content()
    page.click("button:text-is('Rotate with canary')")
    # The click posts the form and returns before the redirected page has loaded: wait for it,
    # or content() reads the page mid-navigation (an empty document).
    page.get_by_test_id("rotation-queued").wait_for()
    assert "Rotation queued: a canary request" in page.content()

    def active() -> bool:
        page.reload()
        return "status-active" in page.content()

    wait_for(active, timeout=60, what="the rotation to cut over", poll=1)
    facts = page.locator(".facts").inner_text()
    assert "Active" in facts
    assert "passed" in facts  # the canary's outcome, recorded on the certificate
    page.goto(running_busbar.url + "certificates/")
    assert page.locator("#certificate-table .status-retiring").count() == 1
    page.screenshot(path=ROOT / "var" / "certificates.png", full_page=True)
    page.close()


# --- the secrets scan ----------------------------------------------------------------------


def run_database_conninfo() -> str:
    params = conninfo_to_dict(os.environ["BUSBAR_ADMIN_DATABASE_URL"])
    params["dbname"] = RUN_DATABASE
    return make_conninfo(**params)


def pem_body_lines(der_key: bytes) -> list[str]:
    """Lines of the key's body as PEM would show them, in both formats a log could print, and the
    whole body unwrapped (a leak of any one is a leak)."""
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    key = load_der_private_key(der_key, password=None)
    lines = [base64.b64encode(der_key).decode()]
    for form in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        pem = key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
        lines += [line for line in pem.decode().splitlines()[1:-1] if len(line) >= 40][:4]
    return lines


def seeded_secrets(running: Running) -> dict[str, str]:
    """Every secret the run was given or seeded, by what it is: the KEK the test chose, the role
    passwords and Django key the launcher keeps under var/, and from the run's own database every
    DIP API key, private key and webhook token (decrypted with the test's KEK)."""
    keyring = crypto.Keyring.parse(running.kek)
    found: dict[str, str] = {"the KEK": running.kek.split(":", 1)[1]}
    local = json.loads((ROOT / "var" / "dev-secrets.json").read_text())
    for name in ("owner_password", "runtime_password", "support_password", "django_secret_key"):
        found[name] = local[name]
    for key_file in sorted((ROOT / "var" / "dipsim-ca").glob("*.key")):
        for n, line in enumerate(key_file.read_text().splitlines()[1:4]):
            found[f"{key_file.name} line {n + 1}"] = line
    with psycopg.connect(run_database_conninfo()) as conn:
        for tenant_id, connection_id, token in conn.execute(
            "SELECT tenant_id, id, api_key_encrypted FROM tenants_connection"
            " WHERE api_key_encrypted <> ''"
        ):
            found[f"DIP API key of connection {connection_id}"] = crypto.decrypt(
                token, context=api_key_context(tenant_id), keyring=keyring
            ).decode()
        for tenant_id, certificate_id, token in conn.execute(
            "SELECT tenant_id, id, private_key_encrypted FROM tenants_certificate"
            " WHERE private_key_encrypted <> ''"
        ):
            context = key_context(Certificate(id=certificate_id, tenant_id=tenant_id))
            der = crypto.decrypt(token, context=context, keyring=keyring)
            for n, line in enumerate(pem_body_lines(der)):
                found[f"private key of certificate {certificate_id} ({n})"] = line
        for channel_id, token in conn.execute("SELECT id, webhook_token FROM tenants_channel"):
            found[f"webhook token of channel {channel_id}"] = token
    return found


def assert_no_secret_leaked(running: Running, secrets: dict[str, str]) -> None:
    places = [(f"log {path.name}", path.read_text(errors="replace")) for path in run_logs()]
    places += [(f"answer to {what}", text) for what, text in running.answers]
    leaks = [
        f"{name} in {where}"
        for where, text in places
        for name, secret in secrets.items()
        if secret in text
    ]
    leaks += [f"a PEM private key in {where}" for where, text in places if "PRIVATE KEY-" in text]
    # The demo password is printed once, by design, in the launcher's banner; nowhere else.
    leaks += [
        f"the demo password in {where}"
        for where, text in places
        if text.count(DEMO_PASSWORD) > (1 if where == f"log {LAUNCHER_LOG.name}" else 0)
    ]
    assert leaks == []


def sign_in_over_http(http: httpx.Client, url: str, username: str) -> None:
    form = http.get(url + "login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, "no CSRF token on the sign-in page"
    answer = http.post(
        url + "login/",
        data={
            "username": username,
            "password": DEMO_PASSWORD,
            "csrfmiddlewaretoken": token.group(1),
        },
        headers={"Referer": url + "login/"},
    )
    assert answer.status_code == 302, answer.text[:500]


def test_no_seeded_secret_appears_in_any_log_or_answer_of_the_run(running_busbar):
    """Everything the run wrote (web, workers, beat, dipsim, the launcher) and every answer the
    tests received, after this test's own sign-ins, page views, a failed sign-in and API calls,
    holds none of the secrets the run was given or seeded. (The fixture scans once more after
    the run has stopped, with whatever the other tests in this module did.)"""
    secrets = seeded_secrets(running_busbar)
    assert len(secrets) >= 20, sorted(secrets)  # the KEK, roles, keys, tokens: the scan has teeth
    url = running_busbar.url
    with running_busbar.http() as http:
        for username in ("alice", "bob", "charlie"):
            http.cookies.clear()
            sign_in_over_http(http, url, username)
            for page in ("", "settings/", "certificates/", "activity/", "account/second-factor/"):
                assert http.get(url + page).status_code in {200, 302, 403}
        http.cookies.clear()
        form = http.get(url + "login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token
        refused = http.post(
            url + "login/",
            data={"username": "alice", "password": "wrong " + DEMO_PASSWORD[::-1]},
            headers={"Referer": url + "login/", "X-CSRFToken": token.group(1)},
        )
        assert refused.status_code in {200, 403}
        key = next(v for k, v in secrets.items() if k.startswith("DIP API key"))
        api = http.get(url + "api/v1/identities/", headers={"Authorization": f"Api-Key {key}"})
        assert api.status_code == 401  # a DIP API key is no Busbar API key
        http.get(url + "api/v1/schema/")
        http.get(url + "readyz")
        http.get(url + "metrics")
    assert len(running_busbar.answers) >= 20
    logs = run_logs()
    assert {path.name for path in logs} >= {"web.log", "beat.log", "dipsim.log", LAUNCHER_LOG.name}
    # The logs are real: the web server logged this test's requests.
    assert "/certificates/" in (ROOT / "var" / "run" / RUN_DATABASE / "web.log").read_text()
    assert_no_secret_leaked(running_busbar, secrets)


def test_the_scan_finds_a_secret_that_leaks(running_busbar, tmp_path):
    """The scan itself: a secret written into an answer is found and named."""
    secrets = seeded_secrets(running_busbar)
    name, secret = next((k, v) for k, v in secrets.items() if k.startswith("webhook token"))
    leaky = Running(
        url=running_busbar.url,
        dip_admin_url=running_busbar.dip_admin_url,
        kek=running_busbar.kek,
        answers=[("GET /leaky", f"content-type: text/html\n<p>{secret}</p>")],
    )
    with pytest.raises(AssertionError, match=re.escape(f"{name} in answer to GET /leaky")):
        assert_no_secret_leaked(leaky, secrets)


def test_sam_sets_up_a_second_factor_and_lands_on_the_support_matrix(running_busbar, browser):
    """The demo's provider support user: Support first explains why it needs a second factor;
    once one is set up, sam sees both demo tenants' flows, and later sign-ins land there."""
    url = running_busbar.url
    page = running_busbar.page(browser)
    page.goto(url + "login/")
    page.fill("#id_username", "sam")
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "account/second-factor/?for=support")
    assert page.get_by_test_id("support-needs-mfa").is_visible()
    key = base64.b32decode(page.get_by_test_id("secret").inner_text())
    page.fill("#id_token", f"{totp(key, step=30, t0=0, digits=6):06d}")
    page.locator("form:has(#id_token) button[type=submit]").click()
    codes = page.locator("[data-testid=recovery-codes] code").all_inner_texts()
    assert len(codes) == 10

    page.get_by_test_id("nav-support").click()
    page.wait_for_url(url + "support/")
    matrix = page.locator("#health-matrix-table").inner_text()
    assert "Acme Energy Supply" in matrix
    assert "Globex Smart Data" in matrix
    page.screenshot(path=ROOT / "var" / "demo-support-matrix.png", full_page=True)

    page.click("text=Sign out")
    page.goto(url + "login/")
    page.fill("#id_username", "sam")
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "login/verify/")
    page.fill("#id_token", codes[0])
    page.click("button[type=submit]")
    page.wait_for_url(url + "support/")
    page.close()


def test_the_demo_runs_reconciliation_and_holds_a_production_change_awaiting_approval(
    running_busbar,
):
    """The launcher hands the demo tenants a first reconciliation run (beat runs the next
    ones): its results show on the Reconciliation page; bob's proposal to take acme's
    production IF-021 live waits for an approver."""
    http = running_busbar.http()
    sign_in_over_http(http, running_busbar.url, "alice")

    def verdicts() -> list[str]:
        page = http.get(running_busbar.url + "reconciliation/")
        assert page.status_code == 200
        return re.findall(r'data-control="([a-z_]+)" data-status="([a-z]+)"', page.text)

    found = wait_for(verdicts, timeout=120, what="the first reconciliation results", poll=1)
    assert {"cadence", "processed", "acknowledged", "dip_record"} <= {c for c, _ in found}
    settings = http.get(running_busbar.url + "settings/").text
    channel_ids = re.findall(r'href="/channels/(\d+)/"', settings)
    pending = [
        page
        for page in (http.get(f"{running_busbar.url}channels/{i}/").text for i in channel_ids)
        if 'data-testid="pending-change"' in page
    ]
    assert len(pending) == 1
    assert "Approve and apply" in pending[0]
    assert "UIT sign-off complete" in pending[0]


def test_bob_triages_an_exception_and_asks_for_a_replay_that_alice_approves(
    running_busbar, browser
):
    """Two people in two browsers: bob (message operator) takes the exception that is acme's own
    to act on, comments and resolves it; he asks for a production replay, sees the checks first,
    and cannot approve it himself; alice (approver) approves it and the worker runs it."""
    url = running_busbar.url
    bob = running_busbar.page(browser)
    sign_in(bob, url, "bob")
    bob.goto(url + "exceptions/")
    yours = bob.locator("[data-whose=yours]")
    # The demo seeds one exception that is acme's own to act on; the simulated market's live
    # traffic can add more of the same rule while the stack runs, so there is at least one.
    assert int(yours.get_attribute("data-count") or 0) >= 1
    yours.click()
    bob.wait_for_url("**whose=yours")
    bob.locator("#exception-table tbody tr[data-to-act=client] a").first.click()
    bob.wait_for_url("**/exceptions/*/")
    assert "BUS-NEGATIVE-CONSUMPTION" in bob.locator("h1").inner_text()
    bob.select_option("[data-testid=assignee]", label="bob")
    bob.click("button:has-text('Assign')")
    assert bob.locator("[data-testid=exception-assignee]").inner_text() == "bob"
    bob.fill("textarea[name=text] >> nth=0", "asked billing whether the reading is a refund")
    bob.click("button:has-text('Comment')")
    bob.select_option("select[name=code]", "accepted_as_is")
    bob.fill("textarea[name=text] >> nth=1", "a refund, correct as sent")
    bob.click("button:has-text('Resolve')")
    assert bob.locator("[data-testid=exception-state]").inner_text() == "resolved"
    history = bob.locator("#history tbody").inner_text()
    assert "Assigned" in history and "Commented" in history and "Resolved" in history  # noqa: PT018

    # The demo's pending production replay names the message; bob asks for another replay of it.
    bob.goto(url + "replays/")
    bob.locator("#pending-replays tbody tr a").first.click()
    message_id = bob.locator("#replay-messages tbody tr a").first.inner_text().split()[0]
    assert bob.locator("[data-testid=approve]").count() == 0  # his own kind of request: no button
    bob.goto(url + "replays/new/")
    bob.fill("[data-testid=replay-ids]", message_id)
    bob.select_option("[data-testid=replay-reason]", "downstream_data_loss")
    bob.fill("[data-testid=replay-reason-text]", "billing restored from a backup")
    bob.click("[data-testid=replay-submit]")
    checks = bob.locator("#replay-checks")
    assert "idempotent" in checks.inner_text()
    assert "production" in checks.inner_text()
    bob.click("[data-testid=replay-submit]")  # now "Request this replay"
    bob.wait_for_url("**/replays/*/")
    replay_url = bob.url
    assert bob.locator("[data-testid=replay-state]").inner_text() == "Waiting for approval"
    assert bob.locator("[data-testid=approve]").count() == 0  # four eyes: not his to approve

    alice = running_busbar.page(browser)
    sign_in(alice, url, "alice")
    alice.goto(replay_url)
    alice.fill("[data-testid=decision-note]", "checked with billing")
    alice.click("[data-testid=approve]")
    alice.wait_for_url(replay_url)
    assert alice.locator("[data-testid=replay-approver]").inner_text().startswith("alice")

    def finished() -> bool:
        alice.goto(replay_url)
        return alice.locator("[data-testid=replay-state]").inner_text() == "Completed"

    wait_for(finished, timeout=60, what="the worker to run the approved replay", poll=1)
    replayed_at = alice.locator("#replay-messages tbody tr td").nth(2).inner_text()
    assert replayed_at != "—"  # the message carries the replay's mark
    bob.close()
    alice.close()


# --- the console in the browser, on the demo's traffic ----------------------------------------

ARTEFACTS = ROOT / "var" / "artefacts" / "browser"

# The demo's people (core/devenv.py's seed): what each may open, and what it may not.
MENUS = {
    "alice": {"Overview", "Flows", "Messages", "Outbound", "Exceptions", "Replays"}
    | {"Reconciliation", "Certificates", "Evidence", "Downstream", "Settings", "Activity"},
    "bob": {"Overview", "Flows", "Messages", "Outbound", "Exceptions", "Replays"}
    | {"Reconciliation", "Certificates", "Downstream", "Settings"},
    "victor": {"Overview", "Flows", "Reconciliation", "Certificates", "Downstream", "Settings"},
    "audrey": {"Overview", "Flows", "Messages", "Outbound", "Exceptions", "Replays"}
    | {"Reconciliation", "Certificates", "Evidence", "Downstream", "Settings", "Activity"},
}
REFUSED = {
    "bob": ["activity/", "evidence/"],
    "victor": [
        *("messages/", "outbound/", "exceptions/", "replays/", "activity/"),
        "messages/export.csv",
    ],
}
MPAN_CELL = re.compile(r"^\d{13}$")


def menu_of(page) -> set[str]:
    return set(page.locator("nav.areas a").all_inner_texts())


@pytest.fixture(scope="module")
def demo_traffic(running_busbar, browser):
    """Waits until the demo's simulated market has delivered messages to acme."""
    page = running_busbar.page(browser)
    sign_in(page, running_busbar.url, "bob")

    def listed() -> int:
        page.goto(running_busbar.url + "messages/?direction=inbound")
        return page.locator("#message-table tbody tr a").count()

    wait_for(listed, timeout=180, what="demo traffic in acme's message list", poll=2)
    page.close()
    return running_busbar


@pytest.mark.parametrize("username", sorted(MENUS))
def test_each_role_sees_only_what_it_may_open_and_is_refused_the_rest(
    demo_traffic,
    browser,
    username,
):
    page = demo_traffic.page(browser)
    sign_in(page, demo_traffic.url, username)
    assert menu_of(page) == MENUS[username]
    for path in REFUSED.get(username, []):
        response = page.goto(demo_traffic.url + path)
        assert response.status == 403, path
        assert "Not allowed" in page.locator("main").inner_text()
    # Every area the menu offers opens.
    for label in sorted(MENUS[username]):
        page.goto(demo_traffic.url)
        with page.expect_navigation():
            page.locator("nav.areas a", has_text=label).first.click()
        assert "Not allowed" not in page.locator("main").inner_text(), label
    page.close()


def test_mpans_show_to_operators_and_are_masked_for_admins(demo_traffic, browser):
    cells = {}
    for username in ("bob", "alice"):
        page = demo_traffic.page(browser)
        sign_in(page, demo_traffic.url, username)
        page.goto(demo_traffic.url + "messages/?direction=inbound")
        cells[username] = [c for c in page.locator("td.mpan").all_inner_texts() if c != "—"]
        page.close()
    assert cells["bob"], "the demo's inbound messages carry MPANs"
    assert all(MPAN_CELL.match(c) for c in cells["bob"])
    assert cells["alice"]
    assert all("•" in c and not MPAN_CELL.match(c) for c in cells["alice"])


def test_the_overview_shows_flow_health_and_refreshes_in_place(demo_traffic, browser):
    page = demo_traffic.page(browser)
    sign_in(page, demo_traffic.url, "alice")
    overview = page.locator("[data-testid=overview]")
    assert overview.locator("[data-testid=volume-chart]").count() == 1
    flows = page.locator("[data-testid=flow]")
    assert flows.count() >= 1
    statuses = {s.lower() for s in flows.locator(".health").all_inner_texts()}  # CSS capitalises
    assert statuses <= {"healthy", "degraded", "failing", "quiet"}
    for row in flows.all():
        assert row.locator(".reason").inner_text().strip()  # every status says why
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTEFACTS / "overview.png", full_page=True)
    page.evaluate("window.__marker = 'same page'")
    # htmx polls every 30 s and swaps the overview without a page load.
    with page.expect_response(
        lambda r: r.request.headers.get("hx-request") == "true", timeout=45_000
    ) as refresh:
        pass
    assert refresh.value.status == 200
    assert page.evaluate("window.__marker") == "same page"
    page.locator("[data-testid=overview] [data-testid=volume-chart]").wait_for()
    page.close()


def test_the_message_page_and_an_export(demo_traffic, browser):
    page = demo_traffic.page(browser)
    sign_in(page, demo_traffic.url, "bob")
    page.goto(demo_traffic.url + "messages/?direction=inbound")
    with page.expect_navigation():
        page.locator("#message-table tbody tr a").first.click()
    for section in ("#timeline", "#findings", "#linked", "#content"):
        assert page.locator(section).count() == 1, section
    assert MPAN_CELL.match(page.locator("[data-testid=mpan]").inner_text().strip())
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTEFACTS / "message.png", full_page=True)
    page.goto(demo_traffic.url + "messages/?direction=inbound")
    with page.expect_download() as download:
        page.locator("[data-testid=export]").click()
    text = Path(download.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    assert {r["direction"] for r in rows} == {"inbound"}
    page.close()


def test_the_keyboard_reaches_the_content_and_the_menu(demo_traffic, browser):
    page = demo_traffic.page(browser)
    sign_in(page, demo_traffic.url, "bob")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.goto(demo_traffic.url)
    texts = []
    for _ in range(4):
        page.keyboard.press("Tab")
        texts.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert "Overview" in texts  # the menu is next after the skip link and the brand
    page.close()
