"""Faults on demand, set through the admin API and the CLI, on the way in and on the way out."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
import time_machine
from conftest import ACME, REPO_ROOT, SDS_TENANT, Running, StartDipsim, StartReceiver
from test_dipsim_push import acme_deliveries, if021

from dipsim.server import LIMITER_KEY
from dipsim.signing import H_DATE, parse_signature_date


def add_fault(dip: Running, **rule: Any) -> dict[str, Any]:
    response = httpx.post(f"{dip.admin_url}/admin/faults", json=rule)
    assert response.status_code == 201, response.text
    return response.json()


def sds(dip: Running) -> Any:
    return dip.client("sds", "key-sds")


def counters(dip: Running) -> dict[str, int]:
    return httpx.get(f"{dip.admin_url}/admin/counters").json()["counters"]


def stored(dip: Running) -> list[dict[str, Any]]:
    return httpx.get(f"{dip.admin_url}/admin/messages").json()


def test_accept_then_drop_leaves_the_sender_unsure_and_a_resend_is_a_duplicate(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim()
    add_fault(dip, kind="drop_after_accept", channel="IF-021", remaining=1)
    payload = if021(random.Random(1))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        sds(dip).send("IF-021", [payload])
    assert len(stored(dip)) == 1
    again = sds(dip).send("IF-021", [payload])
    assert again.status_code == 400
    assert again.json()["messageArray"][0]["message"].startswith("MSG1006")


def test_injected_errors_fire_the_given_number_of_times_set_from_the_cli(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim()
    result = subprocess.run(
        [sys.executable, "-m", "dipsim", "fault", "add", "--admin-url", dip.admin_url, "--kind", "error",
         "--channel", "IF-021", "--dip-id", SDS_TENANT, "--param", "status=503", "--count", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["params"] == {"status": 503}
    rng = random.Random(2)
    statuses = [sds(dip).send("IF-021", [if021(rng)]).status_code for _ in range(3)]
    assert statuses == [503, 503, 201]
    listed = subprocess.run(
        [sys.executable, "-m", "dipsim", "fault", "list", "--admin-url", dip.admin_url],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(listed.stdout)["faults"] == []


def test_faults_are_scoped_to_a_channel_and_a_dip_id(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    add_fault(dip, kind="error", channel="IF-041", params={"status": 500})
    add_fault(dip, kind="error", dip_id=ACME, params={"status": 502})
    assert sds(dip).send("IF-021", [if021(random.Random(3))]).status_code == 201
    assert sds(dip).request("POST", "/dip-channel/IF-041", []).status_code == 500
    assert dip.client().request("POST", "/dip-channel/IF-021", []).status_code == 502


def test_an_outage_refuses_the_api_and_holds_pushes_for_its_duration(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    hook = receiver()
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    assert sds(dip).send("IF-021", [if021(random.Random(4))]).status_code == 201
    dip.wait(hook.messages, what="first push")
    # An egress-scoped outage so the test can still submit; both directions stop pushes. An hour
    # long on dipsim's clock, which the test then moves past its end instead of sleeping.
    outage = add_fault(dip, kind="outage", direction="egress", duration=3600)
    dip.loop.call(lambda: dip.sim.ingest("IF-021", [{"payload": if021(random.Random(5))}], None))
    assert [d["state"] for d in acme_deliveries(dip)].count("pending") == 1
    with time_machine.travel(dt.datetime.fromtimestamp(outage["until"] + 1, dt.UTC)):
        dip.wait(lambda: len(hook.messages()) == 2, what="push after the outage")
    # Signed (on dipsim's clock) only once the outage was over: it was held, not just slow.
    assert parse_signature_date(hook.requests[-1]["headers"][H_DATE]).timestamp() > outage["until"]
    add_fault(dip, kind="outage", duration=30)
    assert sds(dip).send("IF-021", [if021(random.Random(6))]).status_code == 503


@pytest.mark.parametrize(("kind", "status"), [("too_large", 413), ("rate_limit", 429)])
def test_size_and_rate_faults(start_dipsim: StartDipsim, kind: str, status: int) -> None:
    dip = start_dipsim()
    add_fault(dip, kind=kind, remaining=1)
    assert sds(dip).send("IF-021", [if021(random.Random(7))]).status_code == status


def test_real_size_and_rate_limits(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim(max_body_bytes=20_000, rate_limit_per_key=1.0)
    # The token bucket runs on a clock the test moves: one request a second, whatever the load.
    clock = [0.0]
    dip.service.runners[0].app[LIMITER_KEY].clock = lambda: clock[0]
    rng = random.Random(8)
    assert sds(dip).send("IF-021", [if021(rng) for _ in range(10)]).status_code == 413
    assert sds(dip).send("IF-021", [if021(rng)]).status_code == 201
    assert sds(dip).send("IF-021", [if021(rng)]).status_code == 429
    clock[0] += 0.5
    assert sds(dip).send("IF-021", [if021(rng)]).status_code == 429  # half a token is none
    clock[0] += 0.5
    assert sds(dip).send("IF-021", [if021(rng)]).status_code == 201


def test_latency_and_timeout_on_ingress(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    add_fault(dip, kind="latency", remaining=1, params={"ms": 400})
    started = time.monotonic()
    assert sds(dip).send("IF-021", [if021(random.Random(9))]).status_code == 201
    # A lower bound only: an injected delay can make a request no faster, however busy the
    # machine (an upper bound would measure the machine instead).
    assert time.monotonic() - started >= 0.4
    assert counters(dip)["fault.ingress.latency"] == 1
    add_fault(dip, kind="timeout", remaining=1, params={"seconds": 0.5})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        sds(dip).send("IF-021", [if021(random.Random(10))])
    assert len(stored(dip)) == 1


def test_duplicate_and_out_of_order_delivery(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    hook = receiver()
    add_fault(dip, kind="duplicate", direction="egress", dip_id=ACME, remaining=1)
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    response = sds(dip).send("IF-021", [if021(random.Random(11))])
    txn = response.json()["messageArray"][0]["transactionID"]
    dip.wait(lambda: len(hook.requests) == 2, what="the duplicate")
    assert [m["payload"]["CommonBlock"]["D0"]["transactionID"] for m in hook.messages()] == [
        txn,
        txn,
    ]

    add_fault(dip, kind="out_of_order", direction="egress", channel="IF-021", remaining=1)
    rng = random.Random(12)
    sent = sds(dip).send("IF-021", [if021(rng) for _ in range(3)]).json()["messageArray"]
    dip.wait(lambda: len(hook.messages()) == 5, what="the reordered batch")
    got = [m["payload"]["CommonBlock"]["D0"]["transactionID"] for m in hook.messages()[2:]]
    assert got == [e["transactionID"] for e in reversed(sent)]


@pytest.mark.parametrize("kind", ["bad_signature", "expired_signature", "malformed"])
def test_broken_pushes_are_refused_by_a_checking_webhook_and_parked(
    start_dipsim: StartDipsim, receiver: StartReceiver, kind: str
) -> None:
    dip = start_dipsim()
    hook = receiver(verify=True)
    add_fault(dip, kind=kind, direction="egress", dip_id=ACME, remaining=1)
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    assert sds(dip).send("IF-021", [if021(random.Random(13))]).status_code == 201
    dip.wait(lambda: any(d["state"] == "parked" for d in acme_deliveries(dip)), what="parking")
    expected = 400 if kind == "malformed" else 401
    assert [r["status"] for r in hook.requests] == [expected]
    if kind == "malformed":
        with pytest.raises(json.JSONDecodeError):
            json.loads(hook.requests[0]["body"])


def test_a_dropped_push_is_retried(start_dipsim: StartDipsim, receiver: StartReceiver) -> None:
    dip = start_dipsim()
    hook = receiver()
    add_fault(dip, kind="drop", direction="egress", remaining=1)
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    assert sds(dip).send("IF-021", [if021(random.Random(14))]).status_code == 201
    dip.wait(lambda: any(d["state"] == "delivered" for d in acme_deliveries(dip)), what="delivery")
    assert len(hook.requests) == 1
    assert acme_deliveries(dip)[0]["attempts"] == 2


def test_bad_fault_rules_are_refused(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    assert httpx.post(f"{dip.admin_url}/admin/faults", json={"kind": "gremlins"}).status_code == 400
    assert (
        httpx.post(
            f"{dip.admin_url}/admin/faults", json={"kind": "error", "probability": 2}
        ).status_code
        == 400
    )


def test_out_of_order_holds_a_lone_message_until_it_can_overtake_it(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    hook = receiver()
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    add_fault(dip, kind="out_of_order", direction="egress", dip_id=ACME, remaining=1)
    rng = random.Random(15)
    first = sds(dip).send("IF-021", [if021(rng)]).json()["messageArray"][0]["transactionID"]
    # The pusher has seen the first alone and holds it, waiting for a second to put before it.
    dip.wait(lambda: dip.pusher_holds(), what="the first message held")
    second = sds(dip).send("IF-021", [if021(rng)]).json()["messageArray"][0]["transactionID"]
    dip.wait(lambda: len(hook.messages()) == 2, what="both messages")
    assert [m["payload"]["CommonBlock"]["D0"]["transactionID"] for m in hook.messages()] == [
        second,
        first,
    ]
