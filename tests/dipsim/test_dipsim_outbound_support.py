"""What a sender needs from the DIP to be tested honestly: ``Retry-After`` on the answers that ask
it to come back, and the recipient role checks behind MSG1032, MSG1034 and MSG1036."""

from __future__ import annotations

import random
import time
from typing import Any

import httpx
from conftest import ACME, SDS_TENANT, Running, StartDipsim
from test_dipsim_faults import add_fault, sds
from test_dipsim_push import if021

from dipsim import messages
from dipsim.traffic import LDSO_ID, MDS_ID, REGS_ID


def test_an_injected_rate_limit_says_when_to_come_back(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim(retry_after_seconds=7)
    # Every matching rule fires on a request, so they are set one at a time.
    add_fault(dip, kind="rate_limit", remaining=1)
    first = sds(dip).send("IF-021", [if021(random.Random(1))])
    add_fault(dip, kind="rate_limit", remaining=1, params={"retry_after": 2.2})
    second = sds(dip).send("IF-021", [if021(random.Random(2))])
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert (second.status_code, second.headers["Retry-After"]) == (429, "3")
    third = sds(dip).send("IF-021", [if021(random.Random(3))])
    assert third.status_code == 201
    assert "Retry-After" not in third.headers


def test_injected_503_and_429_errors_carry_retry_after_and_others_do_not(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim(retry_after_seconds=4)
    answers = []
    for n, params in enumerate(
        [{"status": 503}, {"status": 500}, {"status": 429, "retry_after": 11}]
    ):
        add_fault(dip, kind="error", remaining=1, params=params)
        answers.append(sds(dip).send("IF-021", [if021(random.Random(n))]))
    assert [(a.status_code, a.headers.get("Retry-After")) for a in answers] == [
        (503, "4"),
        (500, None),
        (429, "11"),
    ]


def test_an_outage_answers_503_with_the_time_it_has_left(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    add_fault(dip, kind="outage", duration=30)
    answer = sds(dip).send("IF-021", [if021(random.Random(4))])
    assert answer.status_code == 503
    assert 28 <= int(answer.headers["Retry-After"]) <= 30


def test_the_real_rate_limit_says_how_long_until_a_token_is_free(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim(rate_limit_per_key=1.0)
    rng = random.Random(5)
    assert sds(dip).send("IF-021", [if021(rng)]).status_code == 201
    refused = sds(dip).send("IF-021", [if021(rng)])
    assert refused.status_code == 429
    # One token a second, and the only one was just taken.
    assert refused.headers["Retry-After"] == "1"
    time.sleep(1.05)
    assert sds(dip).send("IF-021", [if021(rng)]).status_code == 201


def _codes(response: httpx.Response) -> list[str]:
    return [entry["message"].split(" ", 1)[0] for entry in response.json()["messageArray"]]


def test_a_primary_recipient_in_a_role_that_does_not_receive_the_interface_is_msg1032(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim()
    rng = random.Random(6)
    # The Registration Service does not receive consumption data; the supplier does.
    batch = [if021(rng), if021(rng, recipients=[REGS_ID]), if021(rng)]
    refused = sds(dip).send("IF-021", batch)
    assert refused.status_code == 400
    assert _codes(refused) == ["MSG1032"]
    entry = refused.json()["messageArray"][0]
    assert entry["senderUniqueReference"] == batch[1]["CommonBlock"]["S1"]["senderUniqueReference"]
    assert "REGS" in entry["help"]
    # The batch is refused whole: the good messages were not stored and go through alone.
    assert sds(dip).send("IF-021", [batch[0], batch[2]]).status_code == 201


def test_an_always_recipient_in_the_wrong_role_is_msg1036(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    dip.loop.call(lambda: dip.sim.store.set_route("IF-021", "always", [REGS_ID]))
    refused = sds(dip).send("IF-021", [if021(random.Random(7))])
    assert refused.status_code == 400
    assert _codes(refused) == ["MSG1036"]
    dip.loop.call(lambda: dip.sim.store.set_route("IF-021", "always", [MDS_ID]))
    assert sds(dip).send("IF-021", [if021(random.Random(7))]).status_code == 201


def _register_mpan(dip: Running, mpan: str, parties: dict[str, str]) -> None:
    dip.loop.call(
        lambda: dip.sim.store.add_mpan(mpan=mpan, gsp="_A", distributor=LDSO_ID, parties=parties)
    )


def test_a_secondary_recipient_appointed_in_a_role_it_does_not_hold_is_msg1034(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim()
    rng = random.Random(8)
    wrong, right = messages.make_mpan(rng), messages.make_mpan(rng)
    # The registry names the Registration Service as the MPAN's supplier.
    _register_mpan(dip, wrong, {"SUP": REGS_ID})
    _register_mpan(dip, right, {"SUP": ACME})
    refused = sds(dip).send("IF-021", [if021(rng, recipients=[], mpan=wrong)])
    assert refused.status_code == 400
    assert _codes(refused) == ["MSG1034"]
    accepted = sds(dip).send("IF-021", [if021(rng, recipients=[], mpan=right)])
    assert accepted.status_code == 201, accepted.text
    [stored] = [m for m in _stored(dip) if m["mpan"] == right]
    assert ACME in stored["recipients"]


def _stored(dip: Running) -> list[dict[str, Any]]:
    return httpx.get(f"{dip.admin_url}/admin/messages").json()


def test_interfaces_without_a_role_table_accept_any_registered_recipient(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim(recipient_roles={})
    answer = sds(dip).send("IF-021", [if021(random.Random(9), recipients=[REGS_ID])])
    assert answer.status_code == 201, answer.text
    assert SDS_TENANT not in _stored(dip)[0]["recipients"]
