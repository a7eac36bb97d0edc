"""Inbound background entry points: ids in, one service each.

Task names start ``messaging.tasks.inbound.`` so that the routing in settings puts the delivery
work on the ``inbound`` queue; registration is maintenance work.
"""

from __future__ import annotations

from celery import shared_task

from core.tenancy import tenant_task
from messaging.inbound import registration
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
