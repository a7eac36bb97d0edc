"""Evidence of every signed request to the DIP, and the questions it answers.

Each request writes one ``DipExchange``: which certificates signed and carried it, the body's hash,
the messages it held and what the DIP answered, including transport failures (a request that may
have arrived is exactly what evidence is for).

The rows are written through the ``evidence`` database alias (the runtime role on a connection of
its own) and commit at once, whatever the caller's transaction does afterwards: a rollback of the
send path can never erase the proof that a request left. The tenant comes from the caller's
context and is set on that connection for the one insert, so RLS applies as everywhere else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.db import connections, transaction
from django.db.models import Func, IntegerField, Q, Sum

from core.tenancy import current_tenant_id
from messaging.dip import DipResponse, DipTransportError, SubmitResult
from messaging.models import DipExchange, ExchangeOperation
from tenants.models import Certificate, Connection

EVIDENCE_DB = "evidence"


def _record(**fields: Any) -> DipExchange:
    """Insert one exchange on the evidence connection and commit it there and then.

    Raises NoTenantError outside a tenant context (as any tenant write does).
    """
    tenant_id = current_tenant_id()
    with transaction.atomic(using=EVIDENCE_DB):
        with connections[EVIDENCE_DB].cursor() as cursor:
            cursor.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant_id)])
        return DipExchange.objects.using(EVIDENCE_DB).create(tenant_id=tenant_id, **fields)


def record_submit(
    *, connection: Connection, result: SubmitResult, started_at: dt.datetime
) -> DipExchange:
    return _record(
        connection_id=connection.id,
        operation=ExchangeOperation.SUBMIT,
        interface_id=result.interface_id,
        method="POST",
        url=result.url[:500],
        started_at=started_at,
        elapsed_ms=round(result.elapsed_seconds * 1000),
        http_status=result.status,
        outcome=result.action.value,
        error="" if result.status < 300 else result.reason[:500],
        body_sha256=result.body_sha256,
        signing_certificate_fingerprint=result.signing_certificate_fingerprint,
        mtls_certificate_fingerprint=result.mtls_certificate_fingerprint,
        signature_date=result.signature_date,
        sender_references=[o.sender_reference for o in result.outcomes if o.sender_reference],
        transaction_ids=[o.transaction_id for o in result.outcomes if o.transaction_id],
    )


def record_call(
    *,
    connection: Connection,
    operation: str,
    response: DipResponse,
    started_at: dt.datetime,
    interface_id: str = "",
) -> DipExchange:
    return _record(
        connection_id=connection.id,
        operation=operation,
        interface_id=interface_id,
        method=response.method,
        url=response.url[:500],
        started_at=started_at,
        http_status=response.status,
        outcome=response.action.value,
        error="" if response.ok else response.reason[:500],
        body_sha256=response.body_sha256,
        signing_certificate_fingerprint=response.signing_certificate_fingerprint,
        mtls_certificate_fingerprint=response.mtls_certificate_fingerprint,
    )


def record_failure(
    *,
    connection: Connection,
    operation: str,
    error: DipTransportError,
    started_at: dt.datetime,
    interface_id: str = "",
    method: str = "POST",
    sender_references: Sequence[str] = (),
) -> DipExchange:
    outcome = "maybe_delivered" if error.maybe_delivered else "not_delivered"
    return _record(
        connection_id=connection.id,
        operation=operation,
        interface_id=interface_id,
        method=method,
        url=error.url[:500],
        started_at=started_at,
        outcome=outcome,
        error=f"{error.kind}: {error}"[:500],
        body_sha256=error.body_sha256,
        signing_certificate_fingerprint=error.signing_certificate_fingerprint,
        mtls_certificate_fingerprint=error.mtls_certificate_fingerprint,
        sender_references=list(sender_references),
    )


def list_exchanges_with_certificate(
    *, certificate: Certificate, limit: int = 50
) -> list[DipExchange]:
    """What this certificate signed (signing) or carried (mTLS), newest first."""
    field = (
        "mtls_certificate_fingerprint"
        if certificate.purpose == "mtls"
        else "signing_certificate_fingerprint"
    )
    return list(
        DipExchange.objects.filter(**{field: certificate.fingerprint_sha256}).order_by(
            "-started_at"
        )[:limit]
    )


def count_messages_with_certificate(*, certificate: Certificate) -> int:
    """How many messages went to the DIP under this certificate (the revocation question)."""
    field = (
        "mtls_certificate_fingerprint"
        if certificate.purpose == "mtls"
        else "signing_certificate_fingerprint"
    )
    total = DipExchange.objects.filter(
        **{field: certificate.fingerprint_sha256}, operation=ExchangeOperation.SUBMIT
    ).aggregate(
        n=Sum(Func("sender_references", function="cardinality", output_field=IntegerField()))
    )
    return total["n"] or 0


def find_exchanges_for_message(*, reference: str) -> list[DipExchange]:
    """Every exchange that carried a message, by its sender reference or DIP transaction id:
    "which certificate signed this message?"."""
    return list(
        DipExchange.objects.filter(
            Q(sender_references__contains=[reference]) | Q(transaction_ids__contains=[reference])
        ).order_by("started_at")
    )
