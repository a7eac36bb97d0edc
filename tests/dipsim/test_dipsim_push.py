"""Routing and delivery: pushes to registered webhooks, retries on 408/429/5xx, no retry on other 4xx,
parking at the attempt limit, the status channel, and /replay and /requeue."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
import time_machine
from conftest import ACME, GLOBEX, SDS_TENANT, Running, StartDipsim, StartReceiver

from dipsim import messages
from dipsim.traffic import LDSO_ID, MDS_ID
from dipsim.validation import dip_timestamp


def if021(
    rng: random.Random, recipients: list[str] | None = None, mpan: str | None = None
) -> dict[str, Any]:
    return messages.if021(
        sender=SDS_TENANT,
        mpan=mpan or messages.make_mpan(rng),
        day=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
        rng=rng,
        recipients=[ACME] if recipients is None else recipients,
    )


def send_if021(dip: Running, count: int = 1, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    response = dip.client("sds", "key-sds").send("IF-021", [if021(rng) for _ in range(count)])
    assert response.status_code == 201, response.text
    return [entry["transactionID"] for entry in response.json()["messageArray"]]


def acme_deliveries(dip: Running) -> list[dict[str, Any]]:
    return [d for d in dip.deliveries() if d["recipient"] == ACME]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_it_retries_retryable_answers_until_delivered(
    start_dipsim: StartDipsim, receiver: StartReceiver, status: int
) -> None:
    dip = start_dipsim()
    hook = receiver([status, status])
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    [txn] = send_if021(dip)
    dip.wait(lambda: any(d["state"] == "delivered" for d in acme_deliveries(dip)), what="delivery")
    assert [r["status"] for r in hook.requests] == [status, status, 201]
    [delivery] = acme_deliveries(dip)
    assert delivery["attempts"] == 3
    assert hook.messages()[0]["payload"]["CommonBlock"]["D0"]["transactionID"] == txn


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 406, 413, 505])
def test_it_parks_at_once_on_answers_it_must_not_retry(
    start_dipsim: StartDipsim, receiver: StartReceiver, status: int
) -> None:
    dip = start_dipsim()
    hook = receiver([status])
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    send_if021(dip)
    dip.wait(lambda: any(d["state"] == "parked" for d in acme_deliveries(dip)), what="parking")
    [delivery] = acme_deliveries(dip)
    assert delivery["attempts"] == 1
    assert delivery["last_status"] == status
    assert len(hook.requests) == 1


def test_it_parks_after_the_attempt_limit(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim(max_attempts=3)
    hook = receiver([503] * 10)
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    send_if021(dip)
    dip.wait(lambda: any(d["state"] == "parked" for d in acme_deliveries(dip)), what="parking")
    assert len(hook.requests) == 3
    assert acme_deliveries(dip)[0]["attempts"] == 3


def test_network_failures_are_retried(start_dipsim: StartDipsim, receiver: StartReceiver) -> None:
    dip = start_dipsim(max_attempts=3)
    # Nothing listens on this port: every attempt is a connection error.
    assert (
        dip.client().register_webhook("IF-021", ACME, "https://127.0.0.1:9/hook").status_code == 201
    )
    send_if021(dip)
    dip.wait(lambda: any(d["state"] == "parked" for d in acme_deliveries(dip)), what="parking")
    delivery = acme_deliveries(dip)[0]
    assert delivery["attempts"] == 3
    assert delivery["last_status"] is None
    assert "Error" in delivery["last_error"]


def test_messages_wait_for_a_webhook_and_go_out_batched_once_one_is_registered(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    send_if021(dip, count=5)
    assert {d["state"] for d in acme_deliveries(dip)} == {"waiting"}
    hook = receiver()
    assert dip.client().register_webhook("IF-021", ACME, hook.url, max_count=3).status_code == 201
    dip.wait(lambda: all(d["state"] == "delivered" for d in acme_deliveries(dip)), what="delivery")
    assert [len(body) for body in hook.bodies()] == [3, 2]


def test_routing_adds_secondary_recipients_from_the_mpan_registry_and_always_recipients(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    rng = random.Random(4)
    mpan = messages.make_mpan(rng)
    dip.loop.call(
        lambda: dip.sim.store.add_mpan(
            mpan=mpan, gsp="_H", distributor=LDSO_ID, parties={"SUP": GLOBEX}
        )
    )
    response = dip.client("sds", "key-sds").send(
        "IF-021", [if021(rng, recipients=[ACME], mpan=mpan)]
    )
    assert response.status_code == 201
    txn = response.json()["messageArray"][0]["transactionID"]
    row = dip.loop.call(lambda: dict(dip.sim.store.message_by_txn(txn)))
    assert sorted(json.loads(row["recipients"])) == sorted([ACME, GLOBEX, LDSO_ID, MDS_ID])
    hook = receiver()
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    a0 = dip.wait(hook.messages, what="push")[0]["payload"]["CommonBlock"]["A0"]
    assert a0 == {
        "primaryRecipients": [ACME],
        "secondaryRecipients": [GLOBEX, LDSO_ID],
        "always": [MDS_ID],
    }


def test_only_the_recipient_or_its_dcp_may_configure_its_webhook(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    hook = receiver()
    assert dip.client().register_webhook("IF-021", GLOBEX, hook.url).status_code == 403
    dcp = dip.client(api_key="key-dcp", mtls="dcp-mtls", sign="dcp-sign")
    assert dcp.register_webhook("IF-021", GLOBEX, hook.url).status_code == 201
    assert dcp.register_webhook("IF-021", GLOBEX, "ftp://example.com/x").status_code == 400
    assert dcp.request("DELETE", f"/dip-channel/IF-021/pubconfig/{GLOBEX}").status_code == 204
    assert dcp.register_webhook("IF-999", GLOBEX, hook.url).status_code == 404


def test_replay_returns_what_was_sent_in_a_window(
    start_dipsim: StartDipsim, request: pytest.FixtureRequest
) -> None:
    dip = start_dipsim()
    early = send_if021(dip, count=2, seed=1)
    # Ten minutes later on dipsim's clock (and the signer's), rather than a second's sleep.
    later_at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    middle_start = dip_timestamp(later_at - dt.timedelta(minutes=5))
    traveller = time_machine.travel(later_at)
    traveller.start()
    request.addfinalizer(traveller.stop)
    later = send_if021(dip, count=3, seed=2)
    acme = dip.client()
    window = {
        "datetimeFrom": middle_start,
        "datetimeTo": None,
        "eventCode": None,
        "MPAN": None,
        "version": None,
    }
    response = acme.request("POST", f"/dip-channel/IF-021/replay/{ACME}", window)
    assert response.status_code == 200
    replayed = response.json()
    assert [m["payload"]["CommonBlock"]["D0"]["transactionID"] for m in replayed] == later
    assert all(m["payload"]["CommonBlock"]["D0"]["replayIndicator"] is True for m in replayed)
    everything = {
        "datetimeFrom": None,
        "datetimeTo": None,
        "eventCode": "ActivePower",
        "MPAN": None,
        "version": "011",
    }
    assert len(acme.request("POST", f"/dip-channel/IF-021/replay/{ACME}", everything).json()) == 5
    by_id = {**everything, "transactionIDs": [early[1]]}
    only = acme.request("POST", f"/dip-channel/IF-021/replay/{ACME}", by_id).json()
    assert [m["payload"]["CommonBlock"]["D0"]["transactionID"] for m in only] == [early[1]]
    mpan = only[0]["payload"]["CommonBlock"]["M0"]["MPANCore"]
    by_mpan = acme.request(
        "POST", f"/dip-channel/IF-021/replay/{ACME}", {**everything, "MPAN": mpan}
    ).json()
    assert [m["payload"]["CommonBlock"]["D0"]["transactionID"] for m in by_mpan] == [early[1]]
    # Another participant cannot replay ACME's messages; a malformed request is a 400.
    assert (
        dip.client("globex", "key-globex")
        .request("POST", f"/dip-channel/IF-021/replay/{ACME}", everything)
        .status_code
        == 403
    )
    assert (
        acme.request(
            "POST", f"/dip-channel/IF-021/replay/{ACME}", {"datetimeFrom": None}
        ).status_code
        == 400
    )


def test_requeue_pushes_past_messages_again_marked_as_replayed(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    hook = receiver()
    acme = dip.client()
    assert acme.register_webhook("IF-021", ACME, hook.url).status_code == 201
    txns = send_if021(dip, count=2)
    dip.wait(lambda: len(hook.messages()) == 2, what="first delivery")
    request = {
        "datetimeFrom": None,
        "datetimeTo": None,
        "eventCode": None,
        "MPAN": None,
        "version": None,
    }
    response = acme.request("POST", f"/dip-channel/IF-021/requeue/{ACME}", request)
    assert response.status_code == 200
    assert response.json() == {"requeued": 2}
    dip.wait(lambda: len(hook.messages()) == 4, what="requeued delivery")
    again = hook.messages()[2:]
    assert [m["payload"]["CommonBlock"]["D0"]["transactionID"] for m in again] == txns
    assert all(m["payload"]["CommonBlock"]["D0"]["replayIndicator"] for m in again)


def test_status_messages_reach_the_original_senders_status_webhook(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    status_hook = receiver()
    sds = dip.client("sds", "key-sds")
    assert sds.register_status_webhook(SDS_TENANT, status_hook.url).status_code == 201
    [txn] = send_if021(dip)
    status = {
        "transactionID": txn,
        "senderUniqueReference": None,
        "correlationID": None,
        "sentTimestamp": dip_timestamp(),
        "senderID": ACME,
        "recipientID": None,
        "DIPConnectionProviderID": None,
        "message": "RCP1061 - MPAN Invalid or Unknown",
        "help": None,
        "serviceTicketURL": None,
    }
    response = dip.client().request("POST", "/statusmessage", [status])
    assert response.status_code == 201, response.text
    assert response.json()["messageArray"][0]["message"] == "MSG0000 - Success"
    # Forwarded to the sender of the original message, found from its transaction id.
    forwarded = dip.wait(
        lambda: [m for m in status_hook.messages() if m.get("senderID") == ACME],
        what="the forwarded status",
    )
    assert forwarded[0]["message"].startswith("RCP1061")
    assert forwarded[0]["transactionID"] == txn
    # The simulated MDS (an always-recipient of IF-021) acknowledged it too.
    assert any(
        m["senderID"] == MDS_ID and m["message"].startswith("RCP0000")
        for m in status_hook.messages()
    )
    # A participant cannot send status messages in another's name.
    forged = dip.client().request("POST", "/statusmessage", [{**status, "senderID": GLOBEX}])
    assert forged.status_code == 400
    assert forged.json()["messageArray"][0]["message"].startswith("MSG1009")


@pytest.mark.parametrize(("parallel", "parallel_pushes"), [(1, False), (3, True)])
def test_batches_to_one_target_go_one_at_a_time_unless_parallel_pushes_are_allowed(
    start_dipsim: StartDipsim, receiver: StartReceiver, parallel: int, parallel_pushes: bool
) -> None:
    dip = start_dipsim(push_batch_max=1, push_parallel_per_target=parallel)
    hook = receiver(delay=0.4)
    send_if021(dip, count=3)
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    dip.wait(lambda: len(hook.requests) == 3, what="three pushes")
    # Counted by the receiver, not timed: how many pushes it was answering at once.
    assert (hook.most_at_once > 1) is parallel_pushes, hook.most_at_once


def test_plain_http_webhooks_only_when_allowed(
    start_dipsim: StartDipsim, receiver: StartReceiver, tmp_path: Path
) -> None:
    hook = receiver(tls=False, verify=True)
    strict = start_dipsim(data_dir=tmp_path / "strict")
    assert strict.client().register_webhook("IF-021", ACME, hook.url).status_code == 400
    lenient = start_dipsim(data_dir=tmp_path / "lenient", allow_http_webhooks=True)
    assert lenient.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    send_if021(lenient)
    # Still signed over the exact (lower-cased) callback URL: the verifying receiver accepts it.
    assert lenient.wait(hook.messages, what="the push over http")
    assert hook.requests[0]["status"] == 201
