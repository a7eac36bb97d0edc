"""Conformance against the official DIP API specification v2.1.0 (loaded at run time, never copied).

Valid messages of 13 interfaces pass L1 over the real API and reach their recipient in a form the
official egress schemas accept; each kind of broken message gets its MSG code; a batch with one
bad message is refused whole.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from typing import Any

import pytest
from conftest import ACME, DCP, Running, StartDipsim, StartReceiver

from dipsim import messages
from dipsim.validation import Validators, dip_timestamp
from tests.spec import spec_missing, spec_required

REGS_T, SDS_T, MSS_T, MDS_T = "4000000098", "3000000098", "3000000097", "5000000098"
EFFECTIVE = "2026-12-01T00:00:00+00:00"


@pytest.fixture(params=["official", "builtin"])
def l1(request: pytest.FixtureRequest) -> Validators:
    """Each test runs with the official schemas (skipped when absent) and with dipsim's own."""
    return request.getfixturevalue(f"{request.param}_validators")


def response_checker(reference: Validators | None) -> Any:
    """Validate a StandardResponse body against the official schema when it is available."""
    if reference is None or reference.spec is None:
        if spec_required():
            spec_missing("answers checked against the official StandardResponse schema")
        return lambda body: None
    return reference.spec.validator("SubmitEvents__StandardResponse")


def start(start_dipsim: StartDipsim, validators: Validators) -> Running:
    # Every interface is addressed to one supplier here, to test the schemas rather than routing:
    # the recipient role checks (MSG1032/1036) are off.
    dip = start_dipsim(validators=validators, recipient_roles={})

    def register() -> None:
        store = dip.sim.store
        for dip_id, mpid, role in (
            (REGS_T, "RGST", "REGS"),
            (SDS_T, "SDST", "SDS"),
            (MSS_T, "MSST", "MSS"),
            (MDS_T, "MDST", "MDS"),
        ):
            store.upsert_participant(dip_id=dip_id, mpid=mpid, role=role, api_key=None, dcp_id=DCP)

    dip.loop.call(register)
    return dip


def via_dcp(payload: dict[str, Any]) -> dict[str, Any]:
    payload["CommonBlock"]["S1"]["DIPConnectionProviderID"] = DCP
    return payload


def valid_messages(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    mpan = messages.make_mpan(rng)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    chain = {
        "service": "DS",
        "mpan": mpan,
        "supplier": (ACME, "ACME"),
        "provider": (SDS_T, "SDST"),
        "effective": EFFECTIVE,
        "recipients": [ACME],
    }
    out = [
        (
            "IF-001",
            messages.if001(
                sender=REGS_T,
                mpan=mpan,
                incoming=(ACME, "ACME"),
                effective=EFFECTIVE,
                recipients=[ACME],
            ),
        ),
        (
            "IF-007",
            messages.simple(
                "IF-007",
                sender=MSS_T,
                role="MSS",
                mpan=mpan,
                effective=EFFECTIVE,
                recipients=[ACME],
            ),
        ),
        (
            "IF-009",
            messages.simple(
                "IF-009",
                sender=REGS_T,
                role="REGS",
                mpan=mpan,
                effective=EFFECTIVE,
                recipients=[ACME],
            ),
        ),
        ("IF-021", messages.if021(sender=SDS_T, mpan=mpan, day=day, rng=rng, recipients=[ACME])),
        (
            "IF-024",
            messages.simple(
                "IF-024",
                sender=REGS_T,
                role="REGS",
                mpan=mpan,
                effective=EFFECTIVE,
                recipients=[ACME],
            ),
        ),
        ("IF-032", messages.appointment("IF-032", sender=REGS_T, role="REGS", **chain)),
        ("IF-033", messages.appointment("IF-033", sender=REGS_T, role="REGS", **chain)),
        ("IF-034", messages.appointment("IF-034", sender=SDS_T, role="SDS", **chain)),
        ("IF-035", messages.appointment("IF-035", sender=REGS_T, role="REGS", **chain)),
        ("IF-036", messages.appointment("IF-036", sender=REGS_T, role="REGS", **chain)),
        (
            "IF-040",
            messages.simple(
                "IF-040",
                sender=MDS_T,
                role="MDS",
                mpan=mpan,
                effective=EFFECTIVE,
                recipients=[ACME],
            ),
        ),
        (
            "IF-041",
            messages.if041(
                sender=SDS_T,
                role="SDS",
                mpan=mpan,
                read_at=dt.datetime.now(dt.UTC),
                rng=rng,
                recipients=[ACME],
            ),
        ),
        ("IF-031", messages.appointment("IF-031", sender=REGS_T, role="REGS", **chain)),
    ]
    # IF-031 comes from a supplier in the market; here GLOBEX (behind the same DCP) sends it.
    out[-1] = (
        "IF-031",
        messages.appointment(
            "IF-031",
            sender="1000000002",
            role="SUP",
            **{**chain, "supplier": ("1000000002", "GLBX")},
        ),
    )
    return [(channel, via_dcp(payload)) for channel, payload in out]


def test_valid_messages_of_13_interfaces_pass_l1_and_egress_meets_the_official_schemas(
    start_dipsim: StartDipsim,
    receiver: StartReceiver,
    l1: Validators,
    builtin_validators: Validators,
    reference_validators: Validators | None,
) -> None:
    dip = start(start_dipsim, l1)
    dcp = dip.client(api_key="key-dcp", mtls="dcp-mtls", sign="dcp-sign")
    acme = dip.client()
    hook = receiver()
    cases = valid_messages(random.Random(11))
    assert len({channel for channel, _ in cases}) >= 10
    standard_response = response_checker(reference_validators)
    for channel, _ in cases:
        assert acme.register_webhook(channel, ACME, hook.url).status_code == 201
    for channel, payload in cases:
        response = dcp.send(channel, [payload])
        assert response.status_code == 201, (channel, response.text)
        body = response.json()
        standard_response(body)
        entry = body["messageArray"][0]
        assert entry["message"] == "MSG0000 - Success"
        assert entry["transactionID"].startswith(f"T-{channel}-")
        assert entry["DIPConnectionProviderID"] == DCP
        # dipsim's own schemas agree with the official ones on every message the demo builds.
        assert builtin_validators.validate_payload(channel, copy.deepcopy(payload))[1] is None, (
            channel
        )
    pushed = dip.wait(
        lambda: len(hook.messages()) >= len(cases) and hook.messages(), what="all pushes"
    )
    seen = set()
    for item in pushed:
        payload = item["payload"]
        channel = payload["CommonBlock"]["S0"]["interfaceID"]
        _, failure = l1.validate_payload(channel, payload)
        assert failure is None, (channel, failure)
        d0 = payload["CommonBlock"]["D0"]
        assert d0["publicationID"] == "PUB-" + channel[3:]
        assert d0["replayIndicator"] is False
        assert len(d0["transactionTimestamp"]) == 25
        assert payload["CommonBlock"]["A0"]["primaryRecipients"] == [ACME]
        seen.add(channel)
    assert seen == {channel for channel, _ in cases}


def mutate(payload: dict[str, Any], change: str) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    common, custom = payload["CommonBlock"], payload["CustomBlock"]
    if change == "missing mandatory field":
        del custom["B900"]["MQID"]
    elif change == "unknown key":
        common["S1"]["senderNickname"] = "x"
    elif change == "bad enum":
        custom["B900"]["MQID"]["measurementQuantityID"] = "XX"
    elif change == "timestamp with Z":
        common["S1"]["senderTimestamp"] = "2026-11-26T10:00:00Z"
    elif change == "timestamp in the future":
        common["S1"]["senderTimestamp"] = dip_timestamp(
            dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        )
    elif change == "wrong environment":
        common["S1"]["environmentTag"] = "PRD"
    elif change == "unregistered sender":
        common["S1"]["senderDIPID"] = "7777777777"
    elif change == "wrong role":
        common["S1"]["senderRoleID"] = "ADS"
    elif change == "foreign connection provider":
        common["S1"]["DIPConnectionProviderID"] = "9000000002"
    elif change == "unknown primary recipient":
        common["A0"]["primaryRecipients"] = ["8888888888"]
    elif change == "interface id of another channel":
        common["S0"]["interfaceID"] = "IF-022"
    elif change == "event code of another interface":
        common["S0"]["eventCode"] = "[MSApp]"
    elif change == "bad sender reference":
        common["S1"]["senderUniqueReference"] = "REF-1"
    else:
        raise AssertionError(change)
    return payload


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("missing mandatory field", "MSG1001"),
        ("unknown key", "MSG1001"),
        ("bad enum", "MSG1001"),
        ("timestamp with Z", "MSG1007"),
        ("timestamp in the future", "MSG1007"),
        ("wrong environment", "MSG1030"),
        ("unregistered sender", "MSG1009"),
        ("wrong role", "MSG1010"),
        ("foreign connection provider", "MSG1011"),
        ("unknown primary recipient", "MSG1031"),
        ("interface id of another channel", "MSG1002"),
        ("event code of another interface", "MSG1001"),
        ("bad sender reference", "MSG1001"),
    ],
)
def test_each_broken_message_gets_its_msg_code(
    start_dipsim: StartDipsim,
    l1: Validators,
    reference_validators: Validators | None,
    change: str,
    code: str,
) -> None:
    dip = start(start_dipsim, l1)
    dcp = dip.client(api_key="key-dcp", mtls="dcp-mtls", sign="dcp-sign")
    good = valid_messages(random.Random(5))[3][1]
    response = dcp.send("IF-021", [mutate(good, change)])
    assert response.status_code == 400, response.text
    body = response.json()
    response_checker(reference_validators)(body)
    entries = body["messageArray"]
    assert len(entries) == 1
    assert entries[0]["message"].startswith(code + " - "), entries[0]
    assert entries[0]["transactionID"] is None


def test_a_duplicate_sender_reference_is_refused_across_and_within_batches(
    start_dipsim: StartDipsim, l1: Validators
) -> None:
    dip = start(start_dipsim, l1)
    dcp = dip.client(api_key="key-dcp", mtls="dcp-mtls", sign="dcp-sign")
    first = valid_messages(random.Random(1))[3][1]
    assert dcp.send("IF-021", [first]).status_code == 201
    again = dcp.send("IF-021", [first])
    assert again.status_code == 400
    assert again.json()["messageArray"][0]["message"].startswith("MSG1006")
    twin = valid_messages(random.Random(2))[3][1]
    within = dcp.send("IF-021", [twin, twin])
    assert within.status_code == 400
    assert [e["message"][:7] for e in within.json()["messageArray"]] == ["MSG1006"]


def test_a_batch_with_one_bad_message_is_rejected_whole(
    start_dipsim: StartDipsim, l1: Validators
) -> None:
    dip = start(start_dipsim, l1)
    dcp = dip.client(api_key="key-dcp", mtls="dcp-mtls", sign="dcp-sign")
    rng = random.Random(3)
    good = [valid_messages(rng)[3][1] for _ in range(3)]
    bad = mutate(valid_messages(rng)[3][1], "bad enum")
    response = dcp.send("IF-021", [good[0], bad, good[1], good[2]])
    assert response.status_code == 400
    entries = response.json()["messageArray"]
    assert len(entries) == 1
    assert entries[0]["senderUniqueReference"] == bad["CommonBlock"]["S1"]["senderUniqueReference"]
    assert "message 1" in entries[0]["help"]
    assert dip.loop.call(lambda: dip.sim.store.find_messages(channel="IF-021")) == []
    # None of the good ones was kept: they go through on their own.
    resend = dcp.send("IF-021", good)
    assert resend.status_code == 201
    assert len({e["transactionID"] for e in resend.json()["messageArray"]}) == 3


def test_keys_are_case_insensitive_on_ingress_and_swagger_cased_on_egress(
    start_dipsim: StartDipsim,
    receiver: StartReceiver,
    l1: Validators,
) -> None:
    dip = start(start_dipsim, l1)
    dcp = dip.client(api_key="key-dcp", mtls="dcp-mtls", sign="dcp-sign")
    hook = receiver()
    assert dip.client().register_webhook("IF-021", ACME, hook.url).status_code == 201
    good = valid_messages(random.Random(9))[3][1]

    def lower(value: Any) -> Any:
        if isinstance(value, dict):
            return {k.lower(): lower(v) for k, v in value.items()}
        if isinstance(value, list):
            return [lower(v) for v in value]
        return value

    response = dcp.request("POST", "/dip-channel/if-021", [{"PAYLOAD": lower(good)}])
    assert response.status_code == 201, response.text
    pushed = dip.wait(hook.messages, what="the push")[0]["payload"]
    assert pushed["CommonBlock"]["S1"]["senderDIPID"] == SDS_T
    assert pushed["CustomBlock"]["B900"]["MQID"]["measurementQuantityID"] == "AI"
    assert pushed["CommonBlock"]["M0"]["MPANCore"] == good["CommonBlock"]["M0"]["MPANCore"]


def test_the_validate_endpoints_check_one_variant(
    start_dipsim: StartDipsim, l1: Validators
) -> None:
    dip = start(start_dipsim, l1)
    acme = dip.client()
    good = valid_messages(random.Random(4))[3][1]
    ok = acme.request("POST", "/validate/IF-021/ActivePower", [{"payload": good}])
    assert ok.status_code == 201
    assert ok.json() == "Message OK"
    bad = acme.request(
        "POST", "/validate/IF-021/ActivePower", [{"payload": mutate(good, "bad enum")}]
    )
    assert bad.status_code == 400
    assert "MSG1001" in bad.json()
    assert (
        acme.request("POST", "/validate/IF-021/NoSuchEvent", [{"payload": good}]).status_code == 404
    )
