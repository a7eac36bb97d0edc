"""Fairness between tenants, counted in rounds (no timings): tenant A floods Busbar with
deliveries and its downstream system is broken; tenant B's one message is processed after at
most ``rounds_per_tenant()`` inbound rounds of A and delivered after at most one delivery round
of A, while most of A's backlog still waits.

The two Celery queue families (inbound, delivery) are played as FIFO queues in the test, one
task of each in turn as their separate worker pools would; each task runs for real against
PostgreSQL, Redis (the round tokens) and real HTTP receivers.
"""

from __future__ import annotations

from collections import deque

import pytest

from core.tenancy import tenant_context
from messaging.events import delivery, endpoints
from messaging.events import tasks as event_tasks
from messaging.inbound import processing, receive
from messaging.inbound import tasks as inbound_tasks
from messaging.models import Message
from tenants import services
from tests.conftest import build_world
from tests.messaging.inbound_helpers import (
    BASE_URL,
    DipSigner,
    body_of,
    inbound_channel,
    pushed_if021,
    trust,
)
from tests.messaging.receiver import running_receiver

B_DIP_ID = "1000000009"


@pytest.fixture
def world(committed_db):
    return build_world()


def _supplier_b() -> object:
    """A second supplier tenant receiving IF-021, like acme."""
    tenant = services.create_tenant(slug="bravo", name="Bravo Energy")
    with tenant_context(tenant.id):
        identity = services.create_identity(mpid="BRAV", role_code="SUP", dip_id=B_DIP_ID)
        connection = services.create_connection(
            identity=identity, environment="UIT", dip_base_url="https://dip.test", api_key="k"
        )
        services.create_channel(connection=connection, interface_id="IF-021", direction="inbound")
    return tenant.id


def _pusher(tenant_id, recipient: str):
    channel = inbound_channel(tenant_id)
    signer = DipSigner()
    trust(tenant_id, channel.connection, signer.ca)
    url = f"{BASE_URL}/dip/webhooks/{channel.webhook_token}"

    def push(count: int) -> int:
        body = body_of(*(pushed_if021(recipient=recipient) for _ in range(count)))
        answer = receive.receive_push(
            token=channel.webhook_token, url=url, headers=signer.headers(url, body), body=body
        )
        assert answer.status == 201, answer.body
        return answer.delivery_id

    return push


def test_a_flooding_tenant_with_a_broken_downstream_delays_another_by_bounded_rounds(
    world, settings, monkeypatch
):
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    settings.BUSBAR_INBOUND_ROUND_SIZE = 5
    settings.BUSBAR_INBOUND_ROUNDS_PER_TENANT = 2
    receive.forget_endpoints()
    a, b = str(world.acme.id), str(_supplier_b())
    inbound: deque = deque()
    deliveries: deque = deque()
    monkeypatch.setattr(
        inbound_tasks.process_round_task,
        "delay",
        lambda tenant, slot: inbound.append((inbound_tasks.process_round_task, (tenant, slot))),
    )
    monkeypatch.setattr(
        event_tasks.deliver_due_task,
        "delay",
        lambda tenant: deliveries.append((event_tasks.deliver_due_task, (tenant,))),
    )
    # Every round that does something is counted, per tenant and family.
    rounds: list[tuple[str, str]] = []
    real_round, real_deliver = processing.process_round, delivery.deliver_due

    def counted_round(*, tenant_id, limit=None):
        report, claimed = real_round(tenant_id=tenant_id, limit=limit)
        if claimed:
            rounds.append(("inbound", str(tenant_id)))
        return report, claimed

    def counted_deliver(*, tenant_id, limit=100):
        result = real_deliver(tenant_id=tenant_id, limit=limit)
        if result.claimed:
            rounds.append(("delivery", str(tenant_id)))
        return result

    monkeypatch.setattr(processing, "process_round", counted_round)
    monkeypatch.setattr(delivery, "deliver_due", counted_deliver)

    with running_receiver(statuses=[500]) as broken, running_receiver() as healthy:
        settings.BUSBAR_DOWNSTREAM_ALLOW = f"{broken.allow},{healthy.allow}"
        for tenant, url in ((a, broken.url), (b, healthy.url)):
            with tenant_context(tenant):
                endpoints.create_endpoint(
                    name="billing", url=url, event_types=["*"], actor="pytest"
                )
        push_a, push_b = _pusher(a, "1000000001"), _pusher(b, B_DIP_ID)
        # A's flood: 12 deliveries of 5 (12 rounds' worth), stored and handed to the queue
        # before B's one message arrives.
        for _ in range(12):
            inbound.append((inbound_tasks.process_delivery_task, (a, push_a(5))))
        inbound.append((inbound_tasks.process_delivery_task, (b, push_b(1))))

        def b_state() -> str:
            with tenant_context(b):
                return Message.objects.get().state

        processed_after = delivered_after = None
        a_deliveries_when_b_owed = 0
        steps = 0
        while (inbound or deliveries) and delivered_after is None:
            steps += 1
            assert steps < 200, "the queues did not settle"
            for queue in (inbound, deliveries):  # one task of each worker pool in turn
                if queue:
                    task, args = queue.popleft()
                    task.run(*args)
            state = b_state()
            if processed_after is None and state != "received":
                processed_after = rounds.count(("inbound", a))
                a_deliveries_when_b_owed = rounds.count(("delivery", a))
            if state == "delivered":
                delivered_after = rounds.count(("delivery", a)) - a_deliveries_when_b_owed
        with tenant_context(a):
            a_waiting = Message.objects.filter(state="received").count()

    assert b_state() == "delivered"
    assert len(healthy.received) == 1
    # The stated bound: B's message waits behind at most rounds_per_tenant() inbound rounds of
    # A and, once its event is owed, at most one delivery round of A (A's broken endpoint costs
    # one request per round).
    assert processed_after is not None
    assert processed_after <= 2
    assert delivered_after is not None
    assert delivered_after <= 1
    # ...while most of A's backlog (60 messages, 12 rounds) has not been reached yet.
    assert a_waiting >= 60 - 3 * 5
    assert len(broken.received) <= 2
