"""The console in Debian's chromium against the real running stack (``python -m core.devenv run``
with demo traffic from dipsim): each demo role signs in and sees only the areas it may open, is
refused the others, sees MPANs masked or not by its content rights; the overview refreshes itself
in place; the keyboard reaches everything from a skip link.

Screenshots of the overview and a message page are saved under ``var/artefacts/browser/`` (in the
checkout), where CI keeps them as artefacts.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from tests.browser import browser  # noqa: F401 (fixture)
from tests.console.test_run_command import ROOT, running_busbar, sign_in  # noqa: F401 (fixture)
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]

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
def demo_traffic(running_busbar, browser):  # noqa: F811
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
    browser,  # noqa: F811
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


def test_mpans_show_to_operators_and_are_masked_for_admins(demo_traffic, browser):  # noqa: F811
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


def test_the_overview_shows_flow_health_and_refreshes_in_place(demo_traffic, browser):  # noqa: F811
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


def test_the_message_page_and_an_export(demo_traffic, browser):  # noqa: F811
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


def test_the_keyboard_reaches_the_content_and_the_menu(demo_traffic, browser):  # noqa: F811
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
