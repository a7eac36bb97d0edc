"""Writing the audit log. Services call ``record_event``; nothing edits or deletes events."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from core.clientaddr import client_address
from core.logging import request_id_var
from core.models import AuditEvent
from core.tenancy import get_current_tenant_id


def record_event(
    *,
    action: str,
    actor: str,
    actor_user_id: int | None = None,
    tenant_id: UUID | None = None,
    category: str = "activity",
    object_type: str = "",
    object_id: object = "",
    source_address: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event; the tenant defaults to the current context (None outside one).

    Inside a tenant context the event can only be written for that tenant (RLS WITH CHECK).
    """
    return AuditEvent.objects.create(
        tenant_id=tenant_id if tenant_id is not None else get_current_tenant_id(),
        actor=actor[:200],
        actor_user_id=actor_user_id,
        action=action,
        category=category,
        object_type=object_type,
        object_id=str(object_id or ""),
        source_address=source_address or None,
        request_id=request_id_var.get(),
        detail=detail or {},
    )


def request_source(request: Any) -> str | None:
    """The client's address: behind a trusted proxy, the one it forwarded (core.clientaddr)."""
    return client_address(request)
