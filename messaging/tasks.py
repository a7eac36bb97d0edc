"""Background entry points of the messaging app: ids in, one service each."""

from __future__ import annotations

from celery import shared_task

from core.tenancy import tenant_task
from messaging import credentials
from messaging.store import services as store_services
from messaging.store import sweeper


@shared_task
@tenant_task
def rotate_certificate_task(tenant_id: str, certificate_id: str, actor: str) -> str | None:
    """Canary a staged certificate against the DIP and cut over if it passes (idempotent: a
    certificate that is no longer staged is left alone)."""
    active = credentials.rotate_certificate(certificate_id=certificate_id, actor=actor)
    return str(active.id) if active else None


@shared_task
def sweep_task() -> dict[str, int]:
    """Beat: re-enqueue every tenant's due or stranded work (messaging.store.sweeper)."""
    report = sweeper.sweep()
    return {**report.enqueued, **{f"parked:{k}": v for k, v in report.parked.items()}}


@shared_task
def ensure_partitions_task() -> int:
    """Beat, daily: create the message store's monthly partitions three months ahead."""
    return store_services.ensure_partitions(months_ahead=3)
