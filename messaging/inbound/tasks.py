"""Inbound background entry points: ids in, one service each.

Task names start ``messaging.tasks.inbound.`` so that the routing in settings puts the delivery
work on the ``inbound`` queue; registration is maintenance work.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from core.tenancy import tenant_task
from messaging.dip import DipTransportError
from messaging.inbound import processing, registration, status
from messaging.store import rounds
from messaging.store.states import InboundState
from messaging.store.sweeper import SweepHandler, register_sweep_handler
from tenants.models import Connection


@shared_task(name="messaging.tasks.register_webhooks_task")
@tenant_task
def register_webhooks_task(tenant_id: str, connection_id: int, actor: str) -> int:
    """Register a connection's webhooks with the DIP; returns how many registrations succeeded
    (each outcome is in its DipExchange and the audit event)."""
    connection = Connection.objects.select_related("identity").filter(pk=connection_id).first()
    if connection is None:
        return 0
    outcomes = registration.register_webhooks(connection=connection, actor=actor)
    return sum(o.ok for o in outcomes)


# Fairness between tenants (``messaging.store.rounds``): a tenant's received messages are
# processed in rounds of up to ``processing.round_size()``, oldest first, and a tenant holds at
# most ``rounds_per_tenant()`` round tokens (queued or running). The webhook's follow-up for a
# stored delivery runs a round at once when the tenant has a token free, and does nothing when
# all are held: a round under way reaches those messages. A full round queues the next at the
# back of the queue, behind the other tenants'. So however many deliveries one tenant floods in,
# another tenant's delivery waits behind at most ``rounds_per_tenant()`` rounds of each other
# tenant (plus their no-op follow-ups), never behind their backlogs.
FAMILY = "inbound"


def rounds_per_tenant() -> int:
    return int(getattr(settings, "BUSBAR_INBOUND_ROUNDS_PER_TENANT", 2))


def request_inbound_round(tenant_id: str) -> bool:
    """Queue a round for the tenant if it has a token free; True when queued."""
    slot = rounds.take_slot(FAMILY, tenant_id, rounds_per_tenant())
    if slot is None:
        return False
    try:
        process_round_task.delay(tenant_id, slot)
    except BaseException:
        rounds.give_slot(FAMILY, tenant_id, slot)
        raise
    return True


def run_round(tenant_id: str, slot: int) -> dict[str, int]:
    """One round holding token ``slot``; a full round passes the token to the next, queued at the
    back. Otherwise the token is given back, and a round is requested again if messages arrived
    while every token was held (their follow-ups did nothing)."""
    try:
        report, claimed = processing.process_round(tenant_id=tenant_id)
    except BaseException:
        rounds.give_slot(FAMILY, tenant_id, slot)
        raise
    if claimed >= processing.round_size():
        rounds.keep_slot(FAMILY, tenant_id, slot)
        process_round_task.delay(tenant_id, slot)
    else:
        rounds.give_slot(FAMILY, tenant_id, slot)
        if processing.has_received_due(tenant_id=tenant_id):
            request_inbound_round(tenant_id)
    return report.counts()


@shared_task(
    name="messaging.tasks.inbound.process_delivery_task",
    acks_late=True,
    reject_on_worker_lost=True,
)
def process_delivery_task(tenant_id: str, raw_id: int) -> dict[str, int]:
    """The webhook's follow-up for a stored delivery: a round for its tenant now, processing the
    tenant's oldest received messages in bulk (this delivery's among them once it is the
    oldest), or nothing when the tenant's rounds under way will reach them. Idempotent: the
    round claims first."""
    slot = rounds.take_slot(FAMILY, tenant_id, rounds_per_tenant())
    if slot is None:
        return processing.ProcessReport().counts()
    return run_round(tenant_id, slot)


@shared_task(
    name="messaging.tasks.inbound.process_round_task",
    acks_late=True,
    reject_on_worker_lost=True,
)
def process_round_task(tenant_id: str, slot: int) -> dict[str, int]:
    """The next round of a tenant with a backlog (queued by a full round)."""
    return run_round(tenant_id, slot)


@shared_task(
    name="messaging.tasks.inbound.process_messages_task",
    acks_late=True,
    reject_on_worker_lost=True,
)
def process_messages_task(tenant_id: str, message_ids: list[int]) -> dict[str, int]:
    """Process these received messages (what the sweeper re-enqueues)."""
    return processing.process_messages(tenant_id=tenant_id, message_ids=message_ids).counts()


@shared_task(
    name="messaging.tasks.inbound.send_refusal_status_task",
    acks_late=True,
    autoretry_for=(DipTransportError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
)
def send_refusal_status_task(tenant_id: str, message_ids: list[int]) -> int:
    """Tell the DIP (status channel, RCP codes) why these messages were refused."""
    return status.send_refusal_status(tenant_id=tenant_id, message_ids=message_ids)


@shared_task(
    name="messaging.tasks.inbound.normalise_messages_task",
    acks_late=True,
    reject_on_worker_lost=True,
)
def normalise_messages_task(tenant_id: str, message_ids: list[int]) -> int:
    """Record the events of valid messages left behind (what the sweeper re-enqueues)."""
    return len(processing.normalise(tenant_id=tenant_id, message_ids=message_ids))


def _enqueue_received(tenant_id: str, message_ids: list[int]) -> None:
    process_messages_task.delay(tenant_id, message_ids)


def _park_received(tenant_id: str, message_ids: list[int]) -> None:
    processing.park_messages(
        tenant_id=tenant_id,
        message_ids=message_ids,
        reason=f"claimed {processing.max_attempts()} times without finishing (swept)",
    )


# Received messages whose task was lost (a Redis restart, a web process killed after commit and
# before enqueue, a worker killed mid-batch) are found by the beat sweeper and processed again;
# those that used up their attempts are parked as exceptions.
register_sweep_handler(
    SweepHandler(
        direction="inbound",
        state=InboundState.RECEIVED,
        enqueue=_enqueue_received,
        park=_park_received,
        max_attempts=processing.max_attempts(),
    )
)
register_sweep_handler(
    SweepHandler(
        direction="inbound",
        state=InboundState.VALID,
        enqueue=lambda tenant_id, ids: normalise_messages_task.delay(tenant_id, ids),
        max_attempts=processing.max_attempts(),
    )
)
