"""Simulated counterparties and the traffic generator: a tenant's outbound flow gets market replies,
and generated streams reach the tenant's webhooks."""

from __future__ import annotations

import random
from typing import Any

import httpx
from conftest import ACME, SDS_TENANT, Running, StartDipsim, StartReceiver

from dipsim import messages
from dipsim.traffic import REGS_ID, SDS_ID
from dipsim.validation import mpan_check_digit_ok

CHAIN = ("IF-032", "IF-033", "IF-035", "IF-036")


def tune(dip: Running, **config: Any) -> None:
    assert (
        httpx.put(
            f"{dip.admin_url}/admin/counterparties", json={"delay_seconds": 0.05, **config}
        ).status_code
        == 200
    )


def events(received: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (
            m["payload"]["CommonBlock"]["S0"]["interfaceID"],
            m["payload"]["CommonBlock"]["S0"]["eventCode"],
        )
        for m in received
    ]


def request_appointment(dip: Running, provider: tuple[str, str]) -> str:
    payload = messages.appointment(
        "IF-031",
        service="DS",
        sender=ACME,
        role="SUP",
        mpan=messages.make_mpan(random.Random(1)),
        supplier=(ACME, "ACME"),
        provider=provider,
        effective="2026-12-10T00:00:00+00:00",
        recipients=[REGS_ID],
        correlation="CI-20261127-000000000001",
    )
    response = dip.client().send("IF-031", [payload])
    assert response.status_code == 201, response.text
    return response.json()["messageArray"][0]["transactionID"]


def hooks_for(
    dip: Running, receiver: StartReceiver, client: Any, dip_id: str, channels: tuple[str, ...]
) -> Any:
    hook = receiver()
    for channel in channels:
        assert client.register_webhook(channel, dip_id, hook.url).status_code == 201
    assert client.register_status_webhook(dip_id, hook.url).status_code == 201
    return hook


def test_the_registration_service_answers_an_appointment_request(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    tune(dip, accept_share=1.0)
    hook = hooks_for(dip, receiver, dip.client(), ACME, CHAIN)
    txn = request_appointment(dip, (SDS_ID, "SDSA"))
    dip.wait(lambda: len([m for m in hook.messages() if "payload" in m]) >= 3, what="the chain")
    # Channels are delivered independently of each other, so arrival order across them varies.
    received = [m for m in hook.messages() if "payload" in m]
    assert sorted(events(received)) == [
        ("IF-032", "[DSAppInitialResp]"),
        ("IF-035", "[DSAppAccepted]"),
        ("IF-036", "[DSAppActive]"),
    ]
    accepted = next(
        m for m in received if m["payload"]["CommonBlock"]["S0"]["interfaceID"] == "IF-035"
    )
    assert accepted["payload"]["CustomBlock"]["B007"] == {
        "responseCode": "A",
        "proposedAppointmentResponseCode": "SP000",
    }
    # The correlation id of the request follows the chain.
    assert all(
        m["payload"]["CommonBlock"]["S1"]["senderCorrelationID"] == "CI-20261127-000000000001"
        for m in received
    )
    statuses = [m for m in hook.messages() if "payload" not in m]
    assert any(s["transactionID"] == txn and s["message"].startswith("RCP0000") for s in statuses)


def test_a_rejecting_provider_leads_to_a_rejection(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    tune(dip, accept_share=0.0, reject_code="SP002")
    hook = hooks_for(dip, receiver, dip.client(), ACME, CHAIN)
    request_appointment(dip, (SDS_ID, "SDSA"))
    dip.wait(
        lambda: any(
            e[0] == "IF-035" for e in events([m for m in hook.messages() if "payload" in m])
        ),
        what="IF-035",
    )
    received = [m for m in hook.messages() if "payload" in m]
    assert ("IF-035", "[DSAppRejected]") in events(received)
    assert not any(e[0] == "IF-036" for e in events(received))
    rejection = next(
        m for m in received if m["payload"]["CommonBlock"]["S0"]["interfaceID"] == "IF-035"
    )
    assert rejection["payload"]["CustomBlock"]["B007"] == {
        "responseCode": "R",
        "proposedAppointmentResponseCode": "SP002",
    }


def test_an_unknown_provider_is_rejected_by_the_registration_service(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    tune(dip)
    hook = hooks_for(dip, receiver, dip.client(), ACME, CHAIN)
    request_appointment(dip, ("3777777777", "NOPE"))
    dip.wait(
        lambda: any(
            e[0] == "IF-035" for e in events([m for m in hook.messages() if "payload" in m])
        ),
        what="IF-035",
    )
    rejection = next(
        m
        for m in hook.messages()
        if m.get("payload", {}).get("CommonBlock", {}).get("S0", {}).get("interfaceID") == "IF-035"
    )
    assert rejection["payload"]["CustomBlock"]["B007"]["responseCode"] == "R"


def test_a_tenant_service_provider_is_asked_and_its_answer_completes_the_chain(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    tune(dip)
    acme_hook = hooks_for(dip, receiver, dip.client(), ACME, CHAIN)
    sds = dip.client("sds", "key-sds")
    sds_hook = hooks_for(dip, receiver, sds, SDS_TENANT, CHAIN)
    request_appointment(dip, (SDS_TENANT, "SDST"))
    asked = dip.wait(
        lambda: [m for m in sds_hook.messages() if "payload" in m], what="IF-033 to the tenant"
    )[0]
    assert events([asked]) == [("IF-033", "[DSAppSPRequest]")]
    answer = messages.appointment(
        "IF-034",
        service="DS",
        sender=SDS_TENANT,
        role="SDS",
        mpan=asked["payload"]["CommonBlock"]["M0"]["MPANCore"],
        supplier=(ACME, "ACME"),
        provider=(SDS_TENANT, "SDST"),
        effective="2026-12-10T00:00:00+00:00",
        recipients=[REGS_ID],
        response=("A", "SP000"),
    )
    assert sds.send("IF-034", [answer]).status_code == 201
    dip.wait(
        lambda: (
            ("IF-036", "[DSAppActive]")
            in events([m for m in acme_hook.messages() if "payload" in m])
        ),
        what="IF-036",
    )
    dip.wait(
        lambda: (
            ("IF-036", "[DSAppActive]")
            in events([m for m in sds_hook.messages() if "payload" in m])
        ),
        what="IF-036 to SP",
    )


def test_the_traffic_generator_streams_realistic_messages_to_the_tenants(
    start_dipsim: StartDipsim, receiver: StartReceiver
) -> None:
    dip = start_dipsim()
    tune(dip)
    hook = hooks_for(dip, receiver, dip.client(), ACME, ("IF-021", "IF-041", "IF-001", *CHAIN))
    # A fixed number of messages from a seeded generator: what arrives is counted against what
    # was generated, however fast the machine (a second of wall time allows more or fewer).
    response = httpx.post(
        f"{dip.admin_url}/admin/traffic",
        json={"rate": 200, "count": 120, "seed": 20261127, "fault_share": 0.3, "targets": [ACME]},
    )
    assert response.status_code == 201, response.text
    state = dip.wait(
        lambda: (lambda s: s if not s["running"] else None)(
            httpx.get(f"{dip.admin_url}/admin/traffic").json()
        ),
        timeout=30,
        what="the generator to finish",
    )
    assert state["rejected"] == 0
    generated = sum(state["sent"].values())  # channel messages: a chain is three
    assert generated >= 120
    # Every message routed to ACME (a faulty MPAN routes to nobody) reaches its webhook.
    routed = dip.wait(
        lambda: (lambda mine: mine if all(d["state"] == "delivered" for d in mine) else None)(
            [d for d in dip.deliveries() if d["recipient"] == ACME and d["kind"] == "message"]
        ),
        timeout=30,
        what="every delivery to ACME",
    )
    assert generated * 0.8 < len(routed) <= generated
    assert len([m for m in hook.messages() if "payload" in m]) == len(routed)
    received = [m["payload"] for m in hook.messages() if "payload" in m]
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for payload in received:
        by_channel.setdefault(payload["CommonBlock"]["S0"]["interfaceID"], []).append(payload)
    assert {"IF-021", "IF-041"} <= set(by_channel)
    faulty = 0
    for payload in by_channel["IF-021"]:
        days = payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"]
        periods = days[0]["consumptionPeriods"]
        mpan = payload["CommonBlock"]["M0"]["MPANCore"]
        clean = (
            mpan_check_digit_ok(mpan)
            and len(periods) == 48
            and days[0]["settlementDay"]["settlementDayDate"].endswith("T00:00:00+00:00")
            and all(not p["v"].startswith("-") for p in periods)
        )
        faulty += not clean
        if clean:
            assert periods[-1]["sp"][11:19] == "00:00:00"
    share = faulty / len(by_channel["IF-021"])
    assert 0.1 < share < 0.55
