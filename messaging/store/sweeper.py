"""The sweeper: what keeps a lost task, a killed worker or a Redis restart from losing work.

Celery only carries "look at these rows"; the rows hold the truth. Each pipeline registers, per
(direction, state) it owns, how to enqueue work for some message ids and how to park a message whose
attempts ran out. Every beat the sweeper looks, tenant by tenant, for messages in those states that
are due (a retry whose time has come, an expired lease, or a message nobody picked up within the
grace period), stamps them ``swept_at`` so the next sweep leaves them alone for a grace period, and
enqueues them after commit. Running it twice at once is safe: rows are taken with SKIP LOCKED and the
tasks it enqueues claim before they act.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db import connection, transaction

from core.tenancy import tenant_context
from tenants.selectors import list_active_tenant_ids

Enqueue = Callable[[str, list[int]], None]


@dataclass(frozen=True)
class SweepHandler:
    direction: str
    state: str
    enqueue: Enqueue  # called after commit with (tenant id, message ids)
    park: Enqueue | None = None  # called inside the tenant context for exhausted messages
    max_attempts: int = 10


_HANDLERS: dict[tuple[str, str], SweepHandler] = {}


def register_sweep_handler(handler: SweepHandler) -> None:
    """Let the sweeper re-enqueue ``handler.direction`` messages stuck in ``handler.state``.

    Registered at import time by each pipeline's tasks module (one handler per pair)."""
    _HANDLERS[(handler.direction, handler.state)] = handler


def registered_handlers() -> list[SweepHandler]:
    return list(_HANDLERS.values())


@dataclass
class SweepReport:
    enqueued: dict[str, int] = field(default_factory=dict)  # "direction/state" -> count
    parked: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.enqueued.values()) + sum(self.parked.values())


# Candidates picked once (MATERIALIZED), for the reason given in services.claim_due.
_DUE_SQL = """
WITH picked AS MATERIALIZED (
    SELECT id FROM messaging_message
    WHERE tenant_id = %(tenant)s AND direction = %(direction)s AND state = %(state)s
      AND attempts < %(max_attempts)s
      AND coalesce(next_attempt_at, '-infinity') <= now()
      AND coalesce(lease_until, '-infinity') < now()
      AND (next_attempt_at IS NOT NULL OR lease_until IS NOT NULL
           OR state_changed_at < now() - make_interval(secs => %(grace)s))
      AND coalesce(swept_at, '-infinity') < now() - make_interval(secs => %(grace)s)
    ORDER BY id
    LIMIT %(batch)s FOR UPDATE SKIP LOCKED
)
UPDATE messaging_message m SET swept_at = now()
FROM picked
WHERE m.tenant_id = %(tenant)s AND m.id = picked.id
RETURNING m.id
"""

_EXHAUSTED_SQL = """
SELECT id FROM messaging_message
WHERE tenant_id = %(tenant)s AND direction = %(direction)s AND state = %(state)s
  AND attempts >= %(max_attempts)s AND coalesce(lease_until, '-infinity') < now()
ORDER BY id LIMIT %(batch)s
"""


def sweep_tenant(
    *, tenant_id: UUID | str, grace_seconds: float = 60.0, batch: int = 1000
) -> SweepReport:
    """Sweep one tenant (inside its own tenant context); see the module docstring."""
    report = SweepReport()
    with tenant_context(tenant_id):
        for handler in registered_handlers():
            key = f"{handler.direction}/{handler.state}"
            params: dict[str, Any] = {
                "tenant": str(tenant_id),
                "direction": handler.direction,
                "state": handler.state,
                "max_attempts": handler.max_attempts,
                "grace": float(grace_seconds),
                "batch": batch,
            }
            with connection.cursor() as cursor:
                if handler.park is not None:
                    cursor.execute(_EXHAUSTED_SQL, params)
                    exhausted = [int(row[0]) for row in cursor.fetchall()]
                    if exhausted:
                        handler.park(str(tenant_id), exhausted)
                        report.parked[key] = len(exhausted)
                cursor.execute(_DUE_SQL, params)
                due = sorted(int(row[0]) for row in cursor.fetchall())
            if due:
                transaction.on_commit(functools.partial(handler.enqueue, str(tenant_id), due))
                report.enqueued[key] = len(due)
    return report


def sweep(*, grace_seconds: float = 60.0, batch: int = 1000) -> SweepReport:
    """Sweep every active tenant in turn; one tenant's backlog is capped at ``batch`` per state
    per sweep, so a flood in one tenant cannot crowd out the others' recovery."""
    total = SweepReport()
    for tenant_id in list_active_tenant_ids():
        report = sweep_tenant(tenant_id=tenant_id, grace_seconds=grace_seconds, batch=batch)
        for key, count in report.enqueued.items():
            total.enqueued[key] = total.enqueued.get(key, 0) + count
        for key, count in report.parked.items():
            total.parked[key] = total.parked.get(key, 0) + count
    return total
