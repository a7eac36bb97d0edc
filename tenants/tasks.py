"""Background entry points for tenant housekeeping: ids in, one service each."""

from __future__ import annotations

from celery import shared_task

from core.tenancy import tenant_task
from tenants import certificates
from tenants.selectors import list_active_tenant_ids


@shared_task
def certificate_maintenance_task() -> int:
    """Beat's hourly fan-out: one task per active tenant, so one tenant's failure stops no other."""
    tenant_ids = list_active_tenant_ids()
    for tenant_id in tenant_ids:
        certificate_maintenance_for_tenant_task.delay(str(tenant_id))
    return len(tenant_ids)


@shared_task
@tenant_task
def certificate_maintenance_for_tenant_task(tenant_id: str) -> dict[str, int]:
    """End finished overlap windows and send the expiry warnings that are due (idempotent)."""
    retired = certificates.retire_overlapped_certificates()
    warned = len(certificates.check_certificate_expiry())
    return {"retired": retired, "warned": warned}
