"""Inbound background entry points: ids in, one service each.

Task names start ``messaging.tasks.inbound.`` so that the routing in settings puts the delivery
work on the ``inbound`` queue; registration is maintenance work.
"""

from __future__ import annotations

from celery import shared_task

from core.tenancy import tenant_task
from messaging.dip import DipTransportError
from messaging.inbound import processing, registration, status
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


@shared_task(
    name="messaging.tasks.inbound.process_delivery_task",
    acks_late=True,
    reject_on_worker_lost=True,
)
def process_delivery_task(tenant_id: str, raw_id: int) -> dict[str, int]:
    """Process one stored delivery's messages in bulk (idempotent: claims first)."""
    return processing.process_delivery(tenant_id=tenant_id, raw_id=raw_id).counts()


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
