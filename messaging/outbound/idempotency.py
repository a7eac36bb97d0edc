"""``Idempotency-Key`` as the best payment APIs have it.

- The same key with the same request (method, path and JSON body) returns the original answer,
  status and body, without doing anything again.
- The same key with another request is refused with a 422 naming the conflict.
- A request arriving while another with the same key is still running waits for it (the unique
  key's insert blocks until the first commits or rolls back) for up to ``WAIT``; then it gets a
  409. A request that failed validation stored nothing, its key included, so it may be retried.
- Keys are kept ``KEEP`` (at least 24 hours) and then purged, tenant by tenant, as new keys arrive.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from core.tenancy import current_tenant_id
from messaging.models import IdempotencyKey

KEEP = dt.timedelta(hours=24)
WAIT = "5s"
MAX_KEY_LENGTH = 255


class IdempotencyError(Exception):
    """The key cannot be used for this request; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    replayed: bool = False


def request_hash(*, method: str, path: str, data: Any) -> str:
    """The request's fingerprint: method, path and the JSON body in canonical form."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or key != key.strip():
        raise IdempotencyError(
            400, f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters"
        )
    return key


def run_idempotent(
    *, key: str | None, method: str, path: str, data: Any, handler: Callable[[], Answer]
) -> Answer:
    """Run ``handler`` once per key; see the module docstring. ``handler`` raises to store
    nothing (its writes and the key roll back together). Raises IdempotencyError (409, 422)."""
    if key is None:
        return handler()
    key = check_key(key)
    fingerprint = request_hash(method=method, path=path, data=data)
    now = timezone.now()
    with transaction.atomic():
        tenant_id = str(current_tenant_id())
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM messaging_idempotencykey WHERE tenant_id = %s AND expires_at < %s",
                [tenant_id, now],
            )
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [WAIT])
            try:
                with transaction.atomic():
                    cursor.execute(
                        "INSERT INTO messaging_idempotencykey (tenant_id, key, request_hash,"
                        " method, path, created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (tenant_id, key) DO NOTHING RETURNING id",
                        [tenant_id, key, fingerprint, method.upper(), path[:300], now, now + KEEP],
                    )
                    row = cursor.fetchone()
            except OperationalError as exc:
                raise IdempotencyError(
                    409, "a request with this Idempotency-Key is still being processed: retry"
                ) from exc
            cursor.execute("SELECT set_config('lock_timeout', '0', true)")
        if row is None:
            found = IdempotencyKey.objects.get(key=key)
            if found.request_hash != fingerprint:
                raise IdempotencyError(
                    422,
                    f"Idempotency-Key {key!r} was used for another request "
                    f"({found.method} {found.path} with a different body) at "
                    f"{found.created_at:%Y-%m-%dT%H:%M:%SZ}: use a new key for a new request",
                )
            if found.status_code is None:
                raise IdempotencyError(
                    409, "a request with this Idempotency-Key is still being processed: retry"
                )
            return Answer(status=found.status_code, body=found.response, replayed=True)
        answer = handler()
        IdempotencyKey.objects.filter(id=row[0]).update(
            status_code=answer.status, response=answer.body
        )
        return answer
