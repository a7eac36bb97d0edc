"""Provider support in a real browser (Debian's chromium through Playwright): a staff member signs
in with their second factor, lands on Support, sees the matrix and the incident the DIP causes for
every tenant, opens it, uses break-glass to read a message's payload, and the tenant sees that read
in its Activity page.

A module of its own: the browser fixture keeps an event loop running in the main thread while it
is open, and Django refuses database calls from such a thread, so every database write happens in
the module's set-up, before the browser starts, and the console is served from a thread of its own.
The screenshot of the matrix is saved as ``var/support-matrix.png``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django_otp.oath import totp

from core.models import TOTPSecondFactor
from tests.conftest import PASSWORD, build_world, truncate_all_tables
from tests.console.test_support import open_breaker
from tests.messaging.test_break_glass import store_message

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "var" / "support-matrix.png"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Site:
    url: str
    sam_key: bytes
    message_id: int


@pytest.fixture(scope="module")
def support_site(django_db_setup: None, django_db_blocker) -> Iterator[Site]:
    """Two tenants whose connections the DIP keeps failing, a message of acme's with an MPAN, sam
    (provider support) with an authenticator app, and the console served on a free port."""
    with django_db_blocker.unblock():
        world = build_world()
        sam = get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
        sam.groups.add(Group.objects.get_or_create(name="provider_support")[0])
        device = TOTPSecondFactor.new_for(sam)
        device.confirmed = True
        device.save()
        message_id = store_message(world.acme.id, mpan="1200023305967")
        open_breaker(world.acme.id)
        open_breaker(world.globex.id)
        server: WSGIServer = make_server(
            "127.0.0.1", 0, StaticFilesHandler(WSGIHandler()), handler_class=QuietHandler
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Site(
                url=f"http://127.0.0.1:{server.server_port}",
                sam_key=device.bin_key,
                message_id=message_id,
            )
        finally:
            server.shutdown()
            server.server_close()
            for connection in connections.all():
                connection.close()
            truncate_all_tables()


def sign_in(page, site: Site, username: str, *, key: bytes | None = None) -> None:
    page.goto(site.url + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    if key is not None:
        page.wait_for_url("**/login/verify/")
        page.fill("#id_token", f"{totp(key, step=30, t0=0, digits=6):06d}")
        page.click("button[type=submit]")


def test_support_works_an_incident_and_break_glass_shows_in_the_tenants_activity(
    support_site, browser
):
    site = support_site
    staff = browser.new_context(viewport={"width": 1400, "height": 900})
    page = staff.new_page()
    sign_in(page, site, "sam", key=site.sam_key)
    page.wait_for_url(site.url + "/support/")
    assert page.get_by_test_id("nav-support").is_visible()
    matrix = page.locator("#health-matrix-table")
    assert matrix.locator("tbody tr").count() == 2
    assert "Acme Energy Supply" in matrix.inner_text()
    assert "Globex Smart Data" in matrix.inner_text()
    incident = page.locator("[data-testid^=incident-dip-]")
    assert incident.count() == 1
    assert page.locator("[data-testid^=incident-tenant-]").count() == 0
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT, full_page=True)

    incident.locator("a").click()
    assert "is failing for 2 of 2 tenants" in page.get_by_test_id("incident-title").inner_text()
    page.get_by_role("link", name="Acme Energy Supply").click()
    page.get_by_role("link", name=str(site.message_id), exact=True).click()
    # On the message's page (its break-glass form) before looking for what it must not show.
    page.locator("#id_reason").wait_for()
    assert "1200023305967" not in page.content()
    page.fill("#id_reason", "INC-12 DIP failing for all: checking a payload")
    page.get_by_role("button", name="Open break-glass").click()
    page.get_by_test_id("read-content").click()
    assert page.get_by_test_id("mpan").inner_text() == "1200023305967"
    assert '"reading": 42' in page.get_by_test_id("payload").inner_text()
    staff.close()

    tenant = browser.new_context()
    page = tenant.new_page()
    sign_in(page, site, "alice")
    page.wait_for_url(site.url + "/")
    assert "Provider support (sam) may read" in page.content()
    page.goto(site.url + "/activity/?action=support.")
    log = page.locator("main").inner_text()
    assert "support.break_glass_read" in log
    assert "support.break_glass_granted" in log
    tenant.close()
