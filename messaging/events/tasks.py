"""Background entry points of downstream delivery (queue ``delivery``).

Each tenant has at most one delivery round queued (``messaging.store.rounds``): a flood of one
tenant's events, or its broken endpoint, puts one round of its own ahead of another tenant's,
never a backlog of tasks.
"""

from __future__ import annotations

import logging
from uuid import UUID

from celery import shared_task
from django.db import transaction

from messaging.events import delivery
from messaging.store import rounds

logger = logging.getLogger(__name__)

FAMILY = "delivery"
ROUND_LIMIT = 500


def request_delivery_round(tenant_id: UUID | str) -> None:
    """Queue a delivery round for the tenant once the current transaction commits (at once
    outside one), unless one is already queued."""
    transaction.on_commit(
        lambda: rounds.request_round(
            FAMILY, tenant_id, lambda tenant: deliver_due_task.delay(tenant)
        )
    )


@shared_task
def deliver_due_task(tenant_id: str) -> int:
    """Deliver what is due for one tenant, one round; while rounds deliver something, queue the
    next (behind the other tenants' rounds: a backlog drains round after round, taking turns; a
    round that only failed leaves the retries to their schedule and the sweeper). Not
    ``@tenant_task``: that holds one transaction for the whole task, and no transaction may stay
    open while webhooks are sent, so each step opens its own tenant context."""
    rounds.turn_started(FAMILY, tenant_id)
    result = delivery.deliver_due(tenant_id=tenant_id, limit=ROUND_LIMIT)
    if result.delivered:
        request_delivery_round(tenant_id)
    return result.delivered


@shared_task
def sweep_deliveries_task() -> int:
    """Beat, every 30 s: one round per tenant with deliveries due (retries whose time has come,
    leases a dead worker left behind). Safe to run twice at once: claiming skips locked rows."""
    tenants = delivery.tenants_with_due_deliveries()
    for tenant_id in tenants:
        # The safety net does not trust the token (its round may have been lost): one round
        # per tenant per sweep, the token taken so arrivals meanwhile add none.
        rounds.take_turn(FAMILY, tenant_id)
        deliver_due_task.delay(tenant_id)
    return len(tenants)
