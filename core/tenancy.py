"""The tenant context: which tenant this code acts for, enforced by PostgreSQL RLS.

``tenant_context(tenant_id)`` opens a transaction (or savepoint), sets the tenant in a ContextVar and
in the transaction-local setting ``app.tenant_id`` that every RLS policy compares with, and puts the
previous tenant back on exit. Without a context, reads see nothing and writes fail: the tenant
foreign key defaults to ``current_tenant_id()``, which raises.

Two traps shape the code (both have tests):
- a transaction-local setting outlives a savepoint's release, so a nested context would leak its
  tenant to the outer block; on normal exit the previous value is written back explicitly (on error
  the savepoint rollback reverts the setting itself);
- ``on_commit`` callbacks run after the outermost block, so the ContextVar is reset inside it, and
  the callbacks see no tenant rather than a stale one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from django.db import connections, transaction

_current_tenant: ContextVar[UUID | None] = ContextVar("busbar_tenant", default=None)
_current_user: ContextVar[int | None] = ContextVar("busbar_user", default=None)


class NoTenantError(RuntimeError):
    """Raised when tenant-owned data is written with no tenant context."""


def current_tenant_id() -> UUID:
    """The tenant of the innermost ``tenant_context``; raises NoTenantError outside one."""
    tenant_id = _current_tenant.get()
    if tenant_id is None:
        raise NoTenantError("no tenant context: wrap this in tenant_context(tenant_id)")
    return tenant_id


def get_current_tenant_id() -> UUID | None:
    """The current tenant, or None outside a context (for code that may run either way)."""
    return _current_tenant.get()


def _set_local(using: str, name: str, value: object | None) -> None:
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT set_config(%s, %s, true)", [name, "" if value is None else str(value)]
        )


@contextmanager
def tenant_context(tenant_id: UUID | str, *, using: str = "default") -> Iterator[UUID]:
    """Act for ``tenant_id`` inside a transaction; nested contexts restore the outer tenant."""
    tenant = tenant_id if isinstance(tenant_id, UUID) else UUID(str(tenant_id))
    with transaction.atomic(using=using):
        previous = _current_tenant.get()
        token = _current_tenant.set(tenant)
        _set_local(using, "app.tenant_id", tenant)
        try:
            yield tenant
        except BaseException:
            _current_tenant.reset(token)
            raise
        _current_tenant.reset(token)
        _set_local(using, "app.tenant_id", previous)


@contextmanager
def user_context(user_id: int | None, *, using: str = "default") -> Iterator[None]:
    """Let the signed-in user read their own memberships before a tenant is chosen."""
    with transaction.atomic(using=using):
        previous = _current_user.get()
        token = _current_user.set(user_id)
        _set_local(using, "app.user_id", user_id)
        try:
            yield
        except BaseException:
            _current_user.reset(token)
            raise
        _current_user.reset(token)
        _set_local(using, "app.user_id", previous)


def tenant_task[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    """Run a Celery task body inside the tenant context named by its first argument.

    Use it under ``@app.task``: ``def deliver_batch_task(tenant_id, batch_id)``.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        tenant_id = kwargs.get("tenant_id", args[0] if args else None)
        if tenant_id is None:
            raise NoTenantError(f"{func.__name__} needs tenant_id as its first argument")
        with tenant_context(tenant_id):
            return func(*args, **kwargs)

    return wrapper


_current_environment: ContextVar[str | None] = ContextVar("busbar_environment", default=None)


@contextmanager
def environment_context(environment: str) -> Iterator[None]:
    """Confine reads to one DIP environment (an API key's): the selectors of connections,
    channels and certificates then return only that environment's, and treat another's as
    missing. Outside one (console users), every environment of the tenant is visible."""
    token = _current_environment.set(environment)
    try:
        yield
    finally:
        _current_environment.reset(token)


def current_environment() -> str | None:
    return _current_environment.get()
