"""Background entry points of the messaging app: ids in, one service each."""

from __future__ import annotations

from celery import shared_task

from core.tenancy import tenant_task
from messaging import credentials


@shared_task
@tenant_task
def rotate_certificate_task(tenant_id: str, certificate_id: str, actor: str) -> str | None:
    """Canary a staged certificate against the DIP and cut over if it passes (idempotent: a
    certificate that is no longer staged is left alone)."""
    active = credentials.rotate_certificate(certificate_id=certificate_id, actor=actor)
    return str(active.id) if active else None


# Celery discovers ``messaging.tasks`` only: the stage packages' tasks register by being imported.
from messaging.inbound import tasks as inbound_tasks  # noqa: E402, F401
