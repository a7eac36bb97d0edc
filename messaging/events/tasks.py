"""Background entry points of downstream delivery (queue ``delivery``)."""

from __future__ import annotations

import logging

from celery import shared_task

from messaging.events import delivery

logger = logging.getLogger(__name__)

ROUND_LIMIT = 100


@shared_task
def deliver_due_task(tenant_id: str) -> int:
    """Deliver what is due for one tenant, one round; while rounds deliver something, enqueue the
    next (a backlog drains round after round; a round that only failed leaves the retries to
    their schedule and the sweeper). Not ``@tenant_task``: that holds one transaction for the
    whole task, and no transaction may stay open while webhooks are sent, so each step opens its
    own tenant context."""
    result = delivery.deliver_due(tenant_id=tenant_id, limit=ROUND_LIMIT)
    if result.delivered:
        deliver_due_task.delay(tenant_id)
    return result.delivered


@shared_task
def sweep_deliveries_task() -> int:
    """Beat, every 30 s: one round per tenant with deliveries due (retries whose time has come,
    leases a dead worker left behind). Safe to run twice at once: claiming skips locked rows."""
    tenants = delivery.tenants_with_due_deliveries()
    for tenant_id in tenants:
        deliver_due_task.delay(tenant_id)
    return len(tenants)
