"""Outbound against a real dipsim over mutual TLS: stored before sent, enriched, signed, batched per
channel, and every answer (201, 400 per message, 429/5xx, a lost answer) moving each message."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from core.tenancy import tenant_context
from messaging import credentials
from messaging.dip.envelope import SENDER_REFERENCE_RE, parse_dip_timestamp
from messaging.models import DipExchange, Message, Transition
from messaging.outbound import services as outbound
from messaging.outbound.services import SubmissionInvalid
from messaging.store.states import OutboundState
from tenants import certificates, services
from tenants.models import Channel
from tests.messaging.conftest import SDS_API_KEY, SDS_DIP_ID, SUP_API_KEY, SUP_DIP_ID, Dipsim
from tests.messaging.test_dip_client import if021


@pytest.fixture(autouse=True)
def _fresh_pool():
    credentials.DIP_CLIENTS.clear()
    yield
    credentials.DIP_CLIENTS.clear()


@pytest.fixture(autouse=True)
def _no_faults(dipsim):
    httpx.delete(f"{dipsim.admin_url}/admin/faults")
    yield
    httpx.delete(f"{dipsim.admin_url}/admin/faults")


def outbound_channel(tenant_id: object, dipsim: Dipsim) -> Channel:
    """The tenant's SDS identity on dipsim's UIT, with certificates and an outbound IF-021."""
    with tenant_context(tenant_id):
        identity = services.create_identity(mpid="SDSA", role_code="SDS", dip_id=SDS_DIP_ID)
        connection = services.create_connection(
            identity=identity, environment="UIT", dip_base_url=dipsim.base_url, api_key=SDS_API_KEY
        )
        certificates.import_certificate(
            connection=connection,
            purpose="trust_anchor",
            data=dipsim.ca_cert.read_bytes(),
            actor="pytest",
        )
        for purpose, creds in (
            ("signing", (dipsim.sds.sign_cert, dipsim.sds.sign_key)),
            ("mtls", (dipsim.sds.mtls_cert, dipsim.sds.mtls_key)),
        ):
            staged = certificates.import_certificate(
                connection=connection,
                purpose=purpose,
                data=creds[0].read_bytes() + creds[1].read_bytes(),
                actor="pytest",
            )
            certificates.activate_first_certificate(certificate=staged, actor="pytest")
        return services.create_channel(
            connection=connection, interface_id="IF-021", direction="outbound", actor="pytest"
        )


def submission(**overrides: Any) -> dict[str, Any]:
    """What a client system sends: the CustomBlock and the envelope facts only it knows."""
    payload = if021()
    m0 = payload["CommonBlock"]["M0"]
    data = {
        "event_code": "ActivePower",
        "custom_block": payload["CustomBlock"],
        "primary_recipients": [SUP_DIP_ID],
        "mpan": m0["MPANCore"],
        "distributor_dip_id": m0["distributorDIPID"],
        "gsp_group_id": m0["GSPGroupID"],
        "correlation_id": "CI-20260101-000001",
    }
    data.update(overrides)
    return data


def held_by_dipsim(dipsim: Dipsim) -> list[dict[str, Any]]:
    return httpx.get(
        f"{dipsim.admin_url}/admin/messages", params={"sender": SDS_DIP_ID, "limit": 5000}
    ).json()


def fault(dipsim: Dipsim, **rule: Any) -> None:
    assert httpx.post(f"{dipsim.admin_url}/admin/faults", json=rule).status_code == 201


def run_pipeline(tenant_id: object, ids: list[int]) -> outbound.SendReport:
    """What the workers do after commit: prepare, then send (the tasks' bodies)."""
    with tenant_context(tenant_id):
        ready = outbound.prepare_outbound(tenant_id=tenant_id, message_ids=ids)
    return outbound.send_outbound(tenant_id=tenant_id, message_ids=ready)


def states(tenant_id: object, ids: list[int]) -> list[str]:
    with tenant_context(tenant_id):
        found = dict(Message.objects.filter(id__in=ids).values_list("id", "state"))
    return [found[i] for i in ids]


def timeline(tenant_id: object, message_id: int) -> list[tuple[str, str, str]]:
    with tenant_context(tenant_id):
        return [
            (t.from_state, t.to_state, t.reason)
            for t in Transition.objects.filter(message_id=message_id).order_by("at", "id")
        ]


def test_submitted_messages_are_stored_accepted_then_enriched_signed_and_sent_once(
    committed_world, dipsim
):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        ids = outbound.submit_messages(
            channel=channel, items=[submission(), submission()], actor="crm"
        )
    assert states(world.globex.id, ids) == ["accepted", "accepted"]
    assert held_by_dipsim(dipsim) == [] or all(
        m.get("correlation") != "CI-20260101-000001" for m in held_by_dipsim(dipsim)
    )

    report = run_pipeline(world.globex.id, ids)
    assert (report.sent, report.requests) == (2, 1)  # one batch for the channel
    assert states(world.globex.id, ids) == ["sent", "sent"]
    with tenant_context(world.globex.id):
        messages = list(Message.objects.filter(id__in=ids).order_by("id"))
        references = [m.sender_unique_reference for m in messages]
        assert all(SENDER_REFERENCE_RE.match(r) for r in references)
        sent = [outbound.store.message_bytes(m) for m in messages]
    import json

    s1 = json.loads(sent[0])["CommonBlock"]["S1"]
    assert (s1["environmentTag"], s1["senderDIPID"], s1["senderRoleID"]) == (
        "UIT",
        SDS_DIP_ID,
        "SDS",
    )
    assert len(s1["senderTimestamp"]) == 25
    parse_dip_timestamp(s1["senderTimestamp"])
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert [held[r] for r in references] == [1, 1]
    by_reference = {m["senderUniqueReference"]: m for m in held_by_dipsim(dipsim)}
    assert [m.transaction_id for m in messages] == [
        by_reference[r]["transactionID"] for r in references
    ]
    assert [t[1] for t in timeline(world.globex.id, ids[0])] == ["ready", "sending", "sent"]


def test_an_invalid_submission_names_every_problem_and_stores_nothing(committed_world, dipsim):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    bad = submission(mpan="2000056535972", primary_recipients=["nope"], colour="blue")
    del bad["event_code"]
    with tenant_context(world.globex.id):
        with pytest.raises(SubmissionInvalid) as caught:
            outbound.submit_messages(channel=channel, items=[submission(), bad], actor="crm")
        assert not Message.objects.exists()
    assert sorted(p.path for p in caught.value.problems) == [
        "$.messages[1].colour",
        "$.messages[1].event_code",
        "$.messages[1].mpan",
        "$.messages[1].primary_recipients[0]",
    ]


def test_a_batch_with_one_bad_message_rejects_it_and_sends_the_rest_alone(committed_world, dipsim):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    # dipsim knows no participant 1999999999: MSG1031 for that message only.
    items = [submission(), submission(primary_recipients=["1999999999"]), submission()]
    with tenant_context(world.globex.id):
        ids = outbound.submit_messages(channel=channel, items=items, actor="crm")
    report = run_pipeline(world.globex.id, ids)
    assert states(world.globex.id, ids) == ["sent", "rejected", "sent"]
    assert (report.sent, report.rejected) == (2, 1)
    [*_, (_, to_state, reason)] = timeline(world.globex.id, ids[1])
    assert (to_state, reason[:7]) == ("rejected", "MSG1031")
    with tenant_context(world.globex.id):
        rejected = Transition.objects.filter(message_id=ids[1], to_state="rejected").get()
    assert rejected.detail["category"] == "market_operations"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_transient_refusal_is_retried_later_from_the_database_honouring_retry_after(
    committed_world, dipsim, status
):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    # dipsim names a Retry-After on its 429 and 503 answers only.
    params = {"status": status, **({"retry_after": 30} if status != 500 else {})}
    fault(dipsim, kind="error", channel="IF-021", remaining=1, params=params)
    with tenant_context(world.globex.id):
        ids = outbound.submit_messages(channel=channel, items=[submission()], actor="crm")
    report = run_pipeline(world.globex.id, ids)
    assert (report.retried, report.sent) == (1, 0)
    with tenant_context(world.globex.id):
        message = Message.objects.get(id=ids[0])
        assert message.state == "ready"
        delay = (message.next_attempt_at - message.state_changed_at).total_seconds()
    if status in (429, 503):
        assert delay >= 29  # Retry-After: 30 wins over a shorter backoff
        # Nothing is sent before its time.
        assert outbound.send_outbound(tenant_id=world.globex.id, message_ids=ids).requests == 0
    else:
        # Full jitter over the first backoff step (two seconds).
        assert 0 <= delay <= outbound.RETRY_BASE_SECONDS
    with tenant_context(world.globex.id):
        Message.objects.filter(id=ids[0]).update(next_attempt_at=None)
    report = outbound.send_outbound(tenant_id=world.globex.id, message_ids=ids)
    assert report.sent == 1
    assert states(world.globex.id, ids) == ["sent"]


def test_a_lost_answer_is_resent_with_the_same_reference_and_the_duplicate_recorded(
    committed_world, dipsim
):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    fault(dipsim, kind="drop_after_accept", channel="IF-021", remaining=1)
    with tenant_context(world.globex.id):
        ids = outbound.submit_messages(channel=channel, items=[submission()], actor="crm")
    report = run_pipeline(world.globex.id, ids)
    assert report.retried == 1
    with tenant_context(world.globex.id):
        Message.objects.filter(id=ids[0]).update(next_attempt_at=None)
        reference = Message.objects.get(id=ids[0]).sender_unique_reference
    report = outbound.send_outbound(tenant_id=world.globex.id, message_ids=ids)
    assert report.sent == 1
    assert states(world.globex.id, ids) == ["sent"]
    # The DIP holds it once; Busbar's timeline says why it counts as sent.
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert held[reference] == 1
    [*_, (_, to_state, reason)] = timeline(world.globex.id, ids[0])
    assert (to_state, "duplicate" in reason) == ("sent", True)


def test_refused_credentials_are_an_incident_not_a_retry(committed_world, dipsim):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    fault(dipsim, kind="error", channel="IF-021", remaining=1, params={"status": 403})
    with tenant_context(world.globex.id):
        ids = outbound.submit_messages(channel=channel, items=[submission()], actor="crm")
    report = run_pipeline(world.globex.id, ids)
    assert (report.failed, report.retried) == (1, 0)
    assert states(world.globex.id, ids) == ["failed"]
    with tenant_context(world.globex.id):
        failed = Transition.objects.get(message_id=ids[0], to_state="failed")
    assert failed.detail["category"] == "credentials"


def test_a_worker_lost_mid_send_leaves_work_the_sweeper_completes(committed_world, dipsim):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        ids = outbound.submit_messages(channel=channel, items=[submission()], actor="crm")
        ready = outbound.prepare_outbound(tenant_id=world.globex.id, message_ids=ids)
        # The worker claimed and moved it to sending, then died before any answer.
        outbound.store.transition(
            tenant_id=world.globex.id,
            message_ids=ready,
            from_state=OutboundState.READY,
            to_state=OutboundState.SENDING,
            actor="outbound-worker",
        )
    with tenant_context(world.globex.id):
        assert outbound.recover_sending(tenant_id=world.globex.id, message_ids=ids) == ids
    assert outbound.send_outbound(tenant_id=world.globex.id, message_ids=ids).sent == 1
    assert states(world.globex.id, ids) == ["sent"]


def valid_mpan(n: int) -> str:
    from messaging.dip.envelope import mpan_check_digit

    first12 = f"20000{n:07d}"
    return first12 + str(mpan_check_digit(first12))


def arrivals(dipsim: Dipsim, mpan: str) -> list[str]:
    """Sender references the DIP accepted for an MPAN, in the order it accepted them."""
    rows = httpx.get(
        f"{dipsim.admin_url}/admin/messages", params={"mpan": mpan, "limit": 5000}
    ).json()
    return [m["senderUniqueReference"] for m in reversed(rows)]


def references(tenant_id: object, ids: list[int]) -> list[str]:
    with tenant_context(tenant_id):
        found = dict(
            Message.objects.filter(id__in=ids).values_list("id", "sender_unique_reference")
        )
    return [found[i] for i in ids]


def test_a_later_message_for_a_business_key_waits_while_an_earlier_one_is_unsent(
    committed_world, dipsim
):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    mpan = valid_mpan(1)
    with tenant_context(world.globex.id):
        [first] = outbound.submit_messages(
            channel=channel, items=[submission(mpan=mpan)], actor="crm"
        )
        [second] = outbound.submit_messages(
            channel=channel, items=[submission(mpan=mpan)], actor="crm"
        )
        ready = outbound.prepare_outbound(tenant_id=world.globex.id, message_ids=[first, second])
    assert ready == [first, second]
    # The earlier one is held back by a retry; the later one asks to go alone and must wait.
    with tenant_context(world.globex.id):
        outbound.store.schedule_retry(
            tenant_id=world.globex.id, message_ids=[first], delay_seconds=600, error="test"
        )
    report = outbound.send_outbound(tenant_id=world.globex.id, message_ids=[second])
    assert report.requests == 0
    assert states(world.globex.id, [first, second]) == ["ready", "ready"]
    with tenant_context(world.globex.id):
        Message.objects.filter(id__in=[first, second]).update(next_attempt_at=None)
    report = outbound.send_outbound(tenant_id=world.globex.id, message_ids=[first, second])
    assert report.sent == 2
    assert arrivals(dipsim, mpan) == references(world.globex.id, [first, second])


def test_a_later_version_supersedes_an_unsent_earlier_one_on_the_timeline(committed_world, dipsim):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    mpan = valid_mpan(2)
    with tenant_context(world.globex.id):
        [old] = outbound.submit_messages(
            channel=channel, items=[submission(mpan=mpan)], actor="crm"
        )
        [new] = outbound.submit_messages(
            channel=channel, items=[submission(mpan=mpan, supersede=True)], actor="crm"
        )
    assert states(world.globex.id, [old, new]) == ["superseded", "accepted"]
    [(_, to_state, reason)] = timeline(world.globex.id, old)
    assert to_state == "superseded"
    assert f"superseded by message {new}" in reason
    assert run_pipeline(world.globex.id, [old, new]).sent == 1
    assert arrivals(dipsim, mpan) == references(world.globex.id, [new])


def test_a_six_hour_outage_loses_nothing_sends_nothing_twice_and_keeps_order(
    committed_world, dipsim, monkeypatch
):
    """dipsim answers 503 for six hours of the worker's (controlled) clock while submissions keep
    arriving; the breaker opens, probes, closes when the DIP is back, and the backlog drains."""
    from messaging.models import DipExchange
    from messaging.outbound import breaker, clock

    monkeypatch.setattr(outbound, "DRAIN_RATE", 100_000.0)
    clock.reset()
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    tenant = world.globex.id
    mpans = [valid_mpan(10 + n) for n in range(3)]
    submitted: dict[str, list[int]] = {m: [] for m in mpans}

    def submit_round() -> None:
        with tenant_context(tenant):
            for mpan in mpans:
                ids = outbound.submit_messages(
                    channel=channel, items=[submission(mpan=mpan)], actor="crm"
                )
                outbound.prepare_outbound(tenant_id=tenant, message_ids=ids)
                submitted[mpan] += ids

    def tick() -> outbound.SendReport:
        """Ten minutes pass: what is due on the worker's clock is due in the database too."""
        clock.advance(dt.timedelta(minutes=10))
        with tenant_context(tenant):
            ready = list(
                Message.objects.filter(state="ready", next_attempt_at__isnull=False).values_list(
                    "id", flat=True
                )
            )
            Message.objects.filter(id__in=ready).update(next_attempt_at=None)
            ready = list(Message.objects.filter(state="ready").values_list("id", flat=True))
        return outbound.send_outbound(tenant_id=tenant, message_ids=ready)

    try:
        fault(dipsim, kind="outage", duration=3600)
        for n in range(36):  # six hours
            if n % 6 == 0:
                submit_round()
            report = tick()
            assert report.sent == 0
        every = [i for ids in submitted.values() for i in ids]
        assert len(every) == 18
        assert set(states(tenant, every)) == {"ready"}  # nothing lost, nothing parked
        with tenant_context(tenant):
            attempts = list(DipExchange.objects.order_by("id"))
            state = breaker.get_breaker(connection_id=channel.connection_id)
        assert state is not None
        assert state.state in ("open", "half_open")
        # Five failures open it; after that only single-message probes leave while it is open.
        assert all(a.http_status == 503 for a in attempts)
        assert [len(a.sender_references) for a in attempts[breaker.THRESHOLD :]] == [1] * (
            len(attempts) - breaker.THRESHOLD
        )
        assert len(attempts) <= breaker.THRESHOLD + 36

        httpx.delete(f"{dipsim.admin_url}/admin/faults")
        recovered = set()
        for _ in range(12):  # the DIP is back: the next probe closes the breaker
            report = tick()
            recovered |= report.recovered
            if recovered:
                break
        assert recovered == {channel.connection_id}
        outbound.drain_connection(tenant_id=tenant, connection_id=channel.connection_id)
    finally:
        clock.reset()

    assert set(states(tenant, every)) == {"sent"}
    for mpan, ids in submitted.items():
        # Once each, and in the order they were submitted for their MPAN.
        assert arrivals(dipsim, mpan) == references(tenant, ids)


def test_status_messages_and_business_responses_close_the_loop(committed_world, dipsim):
    from messaging.dip.envelope import status_entry
    from messaging.outbound.loop import apply_business_responses, apply_status_messages

    world = committed_world
    tenant = world.globex.id
    channel = outbound_channel(tenant, dipsim)
    with tenant_context(tenant):
        ids = outbound.submit_messages(
            channel=channel,
            items=[
                submission(correlation_id="CI-1"),
                submission(correlation_id="CI-2"),
                submission(correlation_id="CI-3"),
            ],
            actor="crm",
        )
    assert run_pipeline(tenant, ids).sent == 3
    with tenant_context(tenant):
        sent = {m.id: m for m in Message.objects.filter(id__in=ids)}
    ok, refused, _ = (sent[i] for i in ids)
    entries = [
        status_entry(
            code="RCP0000",
            text="Message Success",
            sender_dip_id=SUP_DIP_ID,
            transaction_id=ok.transaction_id,
        ),
        status_entry(
            code="RCP1061",
            text="MPAN Invalid or Unknown",
            sender_dip_id=SUP_DIP_ID,
            transaction_id=None,
            sender_reference=refused.sender_unique_reference,
        ),
        status_entry(
            code="RCP0000", text="Message Success", sender_dip_id=SUP_DIP_ID, transaction_id="T-x"
        ),
    ]
    with tenant_context(tenant):
        report = apply_status_messages(tenant_id=tenant, entries=entries)
    assert (report.acknowledged, report.rejected, report.unmatched) == (
        [ids[0]],
        [ids[1]],
        ["T-x"],
    )
    response = {
        "CommonBlock": {
            "S0": {"interfaceID": "IF-014"},
            "D0": {"transactionID": "T-IF-014-1", "initialCorrelationID": "CI-3"},
            "R0": {"responseCode": "R", "responseMessages": ["ECS1010 - negative consumption"]},
        }
    }
    with tenant_context(tenant):
        report = apply_business_responses(tenant_id=tenant, payloads=[response])
        # Applying the same answers again changes nothing.
        again = apply_status_messages(tenant_id=tenant, entries=entries[:1])
    assert report.rejected == [ids[2]]
    assert again.acknowledged == []
    assert states(tenant, ids) == ["acknowledged", "rejected", "rejected"]
    [*_, (_, _, reason)] = timeline(tenant, ids[2])
    assert "ECS1010" in reason


def acme_if041_channel(tenant_id: object, dipsim: Dipsim) -> Channel:
    """acme's supplier identity (1000000001) pointed at dipsim, with its certificates and an
    outbound IF-041 channel."""
    from tenants.models import Connection

    with tenant_context(tenant_id):
        connection = Connection.objects.get()
        services.update_connection(
            connection=connection,
            dip_base_url=dipsim.base_url,
            api_key=SUP_API_KEY,
            actor="pytest",
        )
        certificates.import_certificate(
            connection=connection,
            purpose="trust_anchor",
            data=dipsim.ca_cert.read_bytes(),
            actor="pytest",
        )
        for purpose, creds in (
            ("signing", (dipsim.sup.sign_cert, dipsim.sup.sign_key)),
            ("mtls", (dipsim.sup.mtls_cert, dipsim.sup.mtls_key)),
        ):
            staged = certificates.import_certificate(
                connection=connection,
                purpose=purpose,
                data=creds[0].read_bytes() + creds[1].read_bytes(),
                actor="pytest",
            )
            certificates.activate_first_certificate(certificate=staged, actor="pytest")
        return services.create_channel(
            connection=connection, interface_id="IF-041", direction="outbound", actor="pytest"
        )


def reading() -> dict[str, Any]:
    from messaging.dip.envelope import dip_timestamp

    return {
        "event_code": "ReadingRemote",
        "custom_block": {
            "B064List": [
                {
                    "meterID": "Z12345678A",
                    "cumulativeRegisterReading": "12345.678",
                    "cumulativeRegisterReadingDateTime": dip_timestamp(
                        dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
                    ),
                    "readingMethod": "A",
                    "siteVisitCheckCode": None,
                }
            ]
        },
        "primary_recipients": [SDS_DIP_ID],
        "mpan": "2000056535971",
        "distributor_dip_id": "2000000020",
        "gsp_group_id": "_H",
    }


def test_submissions_for_two_tenants_arrive_once_each_signed_by_their_own_certificates(
    committed_world, dipsim
):
    world = committed_world
    globex_channel = outbound_channel(world.globex.id, dipsim)
    acme_channel = acme_if041_channel(world.acme.id, dipsim)
    with tenant_context(world.globex.id):
        globex_ids = outbound.submit_messages(
            channel=globex_channel, items=[submission() for _ in range(3)], actor="crm"
        )
    with tenant_context(world.acme.id):
        acme_ids = outbound.submit_messages(
            channel=acme_channel, items=[reading() for _ in range(2)], actor="billing"
        )
        # Each tenant sees only its own messages.
        assert set(Message.objects.values_list("id", flat=True)) == set(acme_ids)
    assert run_pipeline(world.globex.id, globex_ids).sent == 3
    assert run_pipeline(world.acme.id, acme_ids).sent == 2

    held = httpx.get(f"{dipsim.admin_url}/admin/messages", params={"limit": 5000}).json()
    counts = Counter(m["senderUniqueReference"] for m in held)
    for tenant, ids, sender, creds in (
        (world.globex.id, globex_ids, SDS_DIP_ID, dipsim.sds),
        (world.acme.id, acme_ids, SUP_DIP_ID, dipsim.sup),
    ):
        assert [counts[r] for r in references(tenant, ids)] == [1] * len(ids)
        assert {
            m["sender"] for m in held if m["senderUniqueReference"] in references(tenant, ids)
        } == {sender}
        with tenant_context(tenant):
            [exchange] = DipExchange.objects.all()
        # dipsim checked each signature (it refuses a bad one with 401); the evidence names the
        # tenant's own certificates.
        assert exchange.http_status == 201
        from tests.messaging.test_credentials import fingerprint

        assert exchange.signing_certificate_fingerprint == fingerprint(creds.sign_cert.read_bytes())
        assert exchange.mtls_certificate_fingerprint == fingerprint(creds.mtls_cert.read_bytes())


def test_the_sweeper_completes_work_whose_tasks_were_lost(committed_world, dipsim, monkeypatch):
    """Redis lost the queued tasks and a worker died mid-send: the rows alone say what is left,
    and the sweeper's handlers take every message to sent."""
    from messaging import tasks
    from messaging.store import sweeper

    world = committed_world
    tenant = world.globex.id
    channel = outbound_channel(tenant, dipsim)
    with tenant_context(tenant):
        # Accepted, never prepared (the prepare task was lost with Redis).
        lost = outbound.submit_messages(channel=channel, items=[submission()], actor="crm")
        # Ready, never sent (the send task was lost).
        waiting = outbound.submit_messages(channel=channel, items=[submission()], actor="crm")
        outbound.prepare_outbound(tenant_id=tenant, message_ids=waiting)
        # Sending when its worker was killed.
        killed = outbound.submit_messages(channel=channel, items=[submission()], actor="crm")
        outbound.prepare_outbound(tenant_id=tenant, message_ids=killed)
        outbound.store.transition(
            tenant_id=tenant,
            message_ids=killed,
            from_state=OutboundState.READY,
            to_state=OutboundState.SENDING,
            actor="outbound-worker",
        )
    every = lost + waiting + killed
    assert states(tenant, every) == ["accepted", "ready", "sending"]

    queued: list[tuple[Any, str, list[int]]] = []
    for task in (
        tasks.prepare_outbound_task,
        tasks.send_outbound_task,
        tasks.recover_sending_task,
        tasks.drain_connection_task,
    ):
        monkeypatch.setattr(task, "delay", lambda *args, task=task: queued.append((task, *args)))
    # All three share an MPAN, so the later two wait for the first (briefly, in this test).
    monkeypatch.setattr(outbound, "ORDER_WAIT_SECONDS", 0.2)
    for _round in range(10):  # each sweep, then the worker runs what it enqueued
        time.sleep(0.3)
        report = sweeper.sweep_tenant(tenant_id=tenant, grace_seconds=0)
        assert not report.parked
        while queued:
            task, *args = queued.pop(0)
            task.run(*args)
        if set(states(tenant, every)) == {"sent"}:
            break
    assert states(tenant, every) == ["sent", "sent", "sent"]
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert [held[r] for r in references(tenant, every)] == [1, 1, 1]
    mine = set(references(tenant, every))
    order = [r for r in arrivals(dipsim, submission()["mpan"]) if r in mine]
    assert order == references(tenant, every)  # the business key's order was kept


def test_a_storm_of_5xx_answers_opens_the_breaker_and_loses_or_doubles_nothing(
    committed_world, dipsim, monkeypatch
):
    """Twelve 502 answers in a row (not an outage: the DIP answers, badly): the breaker
    opens after its threshold, only probes leave while it is open, and when the storm is over
    every message goes once, in order for its business key."""
    from messaging.models import DipExchange
    from messaging.outbound import breaker, clock

    monkeypatch.setattr(outbound, "DRAIN_RATE", 100_000.0)
    clock.reset()
    tenant = committed_world.globex.id
    channel = outbound_channel(tenant, dipsim)
    mpan = valid_mpan(40)
    fault(dipsim, kind="error", channel="IF-021", remaining=12, params={"status": 502})
    with tenant_context(tenant):
        ids = outbound.submit_messages(
            channel=channel, items=[submission(mpan=mpan) for _ in range(3)], actor="crm"
        )
        outbound.prepare_outbound(tenant_id=tenant, message_ids=ids)
    recovered: set[int] = set()
    try:
        for _minute in range(60):
            clock.advance(dt.timedelta(minutes=1))
            with tenant_context(tenant):
                Message.objects.filter(id__in=ids, state="ready").update(next_attempt_at=None)
            report = outbound.send_outbound(tenant_id=tenant, message_ids=ids)
            recovered |= report.recovered
            if recovered:
                break
        assert recovered == {channel.connection_id}
        outbound.drain_connection(tenant_id=tenant, connection_id=channel.connection_id)
    finally:
        clock.reset()
    assert states(tenant, ids) == ["sent"] * 3
    assert arrivals(dipsim, mpan) == references(tenant, ids)  # once each, in order
    with tenant_context(tenant):
        answers = [e.http_status for e in DipExchange.objects.order_by("id")]
    assert answers[:12] == [502] * 12
    assert set(answers[12:]) == {201}
    # Past the threshold, the breaker let single probes through, never the whole batch again.
    with tenant_context(tenant):
        sizes = [len(e.sender_references) for e in DipExchange.objects.order_by("id")]
    assert sizes[breaker.THRESHOLD : 12] == [1] * (12 - breaker.THRESHOLD)
    for message_id in ids:
        assert all("duplicate" not in reason for _f, _t, reason in timeline(tenant, message_id))


def test_a_dip_that_holds_the_request_and_closes_without_an_answer_is_retried_once_sent(
    committed_world, dipsim
):
    """dipsim's timeout fault: it holds the request, then closes the connection without an
    answer and without processing it. Busbar cannot know that: the message waits for a retry
    marked as maybe delivered, and the resend (same reference) is accepted once."""
    tenant = committed_world.globex.id
    channel = outbound_channel(tenant, dipsim)
    fault(dipsim, kind="timeout", channel="IF-021", remaining=1, params={"seconds": 0.5})
    with tenant_context(tenant):
        ids = outbound.submit_messages(channel=channel, items=[submission()], actor="crm")
    report = run_pipeline(tenant, ids)
    assert (report.retried, report.sent) == (1, 0)
    with tenant_context(tenant):
        retry = Transition.objects.filter(message_id=ids[0], to_state="ready").last()
        reference = Message.objects.get(id=ids[0]).sender_unique_reference
    assert retry is not None
    assert retry.detail["maybe_delivered"] is True
    with tenant_context(tenant):
        Message.objects.filter(id=ids[0]).update(next_attempt_at=None)
    assert outbound.send_outbound(tenant_id=tenant, message_ids=ids).sent == 1
    assert states(tenant, ids) == ["sent"]
    assert references(tenant, ids) == [reference]
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert held[reference] == 1
