"""dipsim's own page: the figures a person checks first, drawn rather than only listed."""

from __future__ import annotations

import random

import httpx
from conftest import StartDipsim
from test_dipsim_push import if021


def test_the_page_draws_counters_as_bars_and_lists_the_latest_messages(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim()
    response = dip.client("sds", "key-sds").send("IF-021", [if021(random.Random(7))])
    assert response.status_code == 201
    page = httpx.get(f"{dip.admin_url}/").text
    assert "<td>accepted.IF-021</td><td>1</td>" in page
    assert 'class="bar" style="width:240px"' in page  # the largest figure fills its bar
    assert "[ActivePower]" in page
    assert "T-IF-021-" in page
