"""Background entry points of the messaging app: ids in, one service each."""

from __future__ import annotations

from celery import shared_task

from core.tenancy import tenant_context, tenant_task
from messaging import credentials
from messaging.evidence import ledger, packs, retention
from messaging.store import services as store_services
from messaging.store import sweeper
from tenants.selectors import list_active_tenant_ids


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


@shared_task
def seal_ledgers_task() -> int:
    """Beat, every few seconds: seal each tenant's settled ledger entries (bounded per run)."""
    made = 0
    for tenant_id in list_active_tenant_ids():
        with tenant_context(tenant_id):
            made += ledger.seal_until_current(tenant_id=tenant_id)
    return made


@shared_task
def verify_ledgers_task() -> int:
    """Beat: re-check every tenant's seals against their sources; returns the problems found."""
    problems = 0
    for tenant_id in list_active_tenant_ids():
        with tenant_context(tenant_id):
            problems += len(ledger.verify_ledger(tenant_id=tenant_id).problems)
    return problems


@shared_task
def generate_evidence_pack_task(tenant_id: str, pack_id: str) -> str | None:
    """Build one requested evidence pack (idempotent: a finished pack is left alone)."""
    pack = packs.generate_pack(tenant_id=tenant_id, pack_id=pack_id)
    return pack.state if pack else None


@shared_task
def purge_expired_payloads_task() -> int:
    """Beat, daily: remove payloads past each tenant's retention (their hashes stay)."""
    purged = 0
    for tenant_id in list_active_tenant_ids():
        with tenant_context(tenant_id):
            purged += retention.purge_expired_payloads()
    return purged


# Downstream delivery's tasks live with their package; importing them here registers them.
from messaging.events.tasks import deliver_due_task, sweep_deliveries_task  # noqa: E402

# Celery discovers ``messaging.tasks`` only: the stage packages' tasks register by being imported.
# Downstream delivery's tasks live with their package; importing them here registers them.
from messaging.inbound import tasks as inbound_tasks  # noqa: E402

__all__ = [
    "deliver_due_task",
    "ensure_partitions_task",
    "inbound_tasks",
    "rotate_certificate_task",
    "sweep_deliveries_task",
    "sweep_task",
]
