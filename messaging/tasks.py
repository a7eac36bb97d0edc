"""Background entry points of the messaging app: ids in, one service each."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction

from core.tenancy import tenant_context, tenant_task
from messaging import credentials
from messaging.evidence import audit_archive, ledger, packs, retention
from messaging.outbound import services as outbound
from messaging.reconciliation import services as reconciliation
from messaging.store import services as store_services
from messaging.store import sweeper, upkeep
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
def keep_tables_task() -> dict[str, list[str]]:
    """Beat, every few seconds: vacuum and analyse the tables written fast (as the owner)."""
    report = upkeep.keep_tables()
    return {"vacuumed": report.vacuumed, "analysed": report.analysed}


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


@shared_task
def archive_audit_task() -> int:
    """Beat, daily: move each tenant's audit months past the live period into archive files,
    and purge archive files past the archive period."""
    moved = 0
    for tenant_id in list_active_tenant_ids():
        with tenant_context(tenant_id):
            moved += len(audit_archive.archive_due_months(tenant_id=tenant_id))
            audit_archive.purge_expired_archives()
    return moved


@shared_task(name="messaging.tasks.outbound.prepare_outbound_task", acks_late=True)
@tenant_task
def prepare_outbound_task(tenant_id: str, message_ids: list[int]) -> int:
    """Enrich accepted messages and store their final bytes; then send the ready ones."""
    ready = outbound.prepare_outbound(tenant_id=tenant_id, message_ids=message_ids)
    if ready:
        transaction.on_commit(lambda: send_outbound_task.delay(tenant_id, ready))
    return len(ready)


@shared_task(name="messaging.tasks.outbound.send_outbound_task", acks_late=True)
def send_outbound_task(tenant_id: str, message_ids: list[int]) -> dict[str, int]:
    """Send ready messages to the DIP (it opens the tenant context per step itself, so the claim
    commits before the request leaves)."""
    report = outbound.send_outbound(tenant_id=tenant_id, message_ids=message_ids)
    for connection_id in report.recovered:
        drain_connection_task.delay(tenant_id, connection_id)
    if report.paced:
        # The rate limit held these for about a second: look again then (their next attempt
        # time is in the database too, so a lost task only leaves them to the sweeper).
        send_outbound_task.apply_async(
            (tenant_id, report.paced), countdown=max(report.paced_wait, 0.05)
        )
    return {k: v for k, v in vars(report).items() if isinstance(v, int) and not isinstance(v, bool)}


@shared_task(name="messaging.tasks.outbound.drain_connection_task", acks_late=True)
def drain_connection_task(tenant_id: str, connection_id: int) -> int:
    """After an outage: send the connection's backlog, oldest first, paced."""
    return outbound.drain_connection(tenant_id=tenant_id, connection_id=connection_id).sent


@shared_task(name="messaging.tasks.outbound.recover_sending_task", acks_late=True)
def recover_sending_task(tenant_id: str, message_ids: list[int]) -> int:
    with tenant_context(tenant_id):
        ready = outbound.recover_sending(tenant_id=tenant_id, message_ids=message_ids)
    if ready:
        send_outbound_task.delay(tenant_id, ready)
    return len(ready)


# The sweeper re-enqueues what a lost task or a killed worker left behind, by state.
sweeper.register_sweep_handler(
    sweeper.SweepHandler(
        direction="outbound",
        state="accepted",
        enqueue=lambda tenant_id, ids: prepare_outbound_task.delay(tenant_id, ids),
    )
)
sweeper.register_sweep_handler(
    sweeper.SweepHandler(
        direction="outbound",
        state="ready",
        enqueue=lambda tenant_id, ids: send_outbound_task.delay(tenant_id, ids),
        max_attempts=10_000,  # the retry budget (time), not a count, parks ready messages
    )
)
sweeper.register_sweep_handler(
    sweeper.SweepHandler(
        direction="outbound",
        state="sending",
        enqueue=lambda tenant_id, ids: recover_sending_task.delay(tenant_id, ids),
        max_attempts=10_000,
    )
)


# Downstream delivery's tasks live with their package; importing them here registers them.
from messaging.events.tasks import deliver_due_task, sweep_deliveries_task  # noqa: E402

# Celery discovers ``messaging.tasks`` only: the stage packages' tasks register by being imported.
# Downstream delivery's tasks live with their package; importing them here registers them.
from messaging.inbound import tasks as inbound_tasks  # noqa: E402
from messaging.replay import tasks as replay_tasks  # noqa: E402

__all__ = [
    "deliver_due_task",
    "ensure_partitions_task",
    "inbound_tasks",
    "replay_tasks",
    "rotate_certificate_task",
    "sweep_deliveries_task",
    "sweep_task",
]


@shared_task
def reconciliation_task() -> int:
    """Beat: one reconciliation run per active tenant, each in its own task so one tenant's
    slow DIP or failure delays no other."""
    tenant_ids = list_active_tenant_ids()
    for tenant_id in tenant_ids:
        reconcile_tenant_task.delay(tenant_id)
    return len(tenant_ids)


@shared_task
@tenant_task
def reconcile_tenant_task(tenant_id: str, actor: str = "system") -> int:
    """Run every reconciliation control for the tenant and keep the results (and notify)."""
    return len(reconciliation.run_reconciliation(actor=actor))
