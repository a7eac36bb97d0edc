"""Fair turns between tenants on a shared queue: at most one queued round per tenant and family.

A family's work (inbound processing, downstream delivery) goes through a FIFO Celery queue. If
every arrival enqueued its own task, a tenant that floods would put thousands of tasks ahead of
another tenant's one. Instead a tenant's work is done in *rounds* (claim up to a bounded number
of its oldest due rows, handle them, claim again next time), and a round is enqueued only while
the tenant has none queued: a token in Redis (``SET NX`` with an expiry) says one is. The round
gives the token back when it starts, so work arriving meanwhile queues the next one, behind the
other tenants' rounds: the queue holds at most one round per tenant and turns go round robin.

The token is only a hint. PostgreSQL holds the truth (the rows and their leases): a token lost
with Redis, or one whose round was lost, expires after ``TOKEN_SECONDS``, and the sweeper finds
anything left due meanwhile. A stale token can at worst let a second round of the same tenant
into the queue, never lose work.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from django.core.cache import cache

TOKEN_SECONDS = 60


def _key(family: str, tenant_id: UUID | str) -> str:
    return f"round:{family}:{tenant_id}"


def take_turn(family: str, tenant_id: UUID | str) -> bool:
    """Claim the tenant's queued-round token; False when a round is already queued."""
    return bool(cache.add(_key(family, tenant_id), 1, TOKEN_SECONDS))


def turn_started(family: str, tenant_id: UUID | str) -> None:
    """The queued round has started: the next arrival may queue another."""
    cache.delete(_key(family, tenant_id))


def request_round(family: str, tenant_id: UUID | str, enqueue: Callable[[str], None]) -> bool:
    """Enqueue one round for the tenant unless one is already queued; True when enqueued."""
    if not take_turn(family, tenant_id):
        return False
    try:
        enqueue(str(tenant_id))
    except BaseException:
        turn_started(family, tenant_id)  # nothing was queued: let the next arrival try
        raise
    return True


# Inbound rounds hold their token while queued *and* running, with a few slots per tenant: a
# tenant's arrivals are then no-ops while it has that many rounds under way (its backlog is
# reached by them, oldest first), and the slots let one busy tenant use more than one worker.


def take_slot(family: str, tenant_id: UUID | str, slots: int) -> int | None:
    """Take one of the tenant's ``slots`` round tokens; its number, or None when all are held."""
    for slot in range(max(1, slots)):
        if cache.add(f"{_key(family, tenant_id)}:{slot}", 1, TOKEN_SECONDS):
            return slot
    return None


def keep_slot(family: str, tenant_id: UUID | str, slot: int) -> None:
    """Renew a held token's expiry (a full round passes it on to the next)."""
    cache.set(f"{_key(family, tenant_id)}:{slot}", 1, TOKEN_SECONDS)


def give_slot(family: str, tenant_id: UUID | str, slot: int) -> None:
    cache.delete(f"{_key(family, tenant_id)}:{slot}")
