"""Status back to the DIP: messages refused in validation are reported to their sender on the
status channel (``POST /statusmessage``, one RCP entry per message), through the connection's
signed mTLS client, and every call is recorded as a ``DipExchange`` naming the transactions.

Idempotent: a message whose refusal the DIP already took (a 201 exchange naming its transaction
id) is not reported again, so a retried task sends nothing twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from django.utils import timezone

from core.tenancy import tenant_context
from messaging.credentials import dip_client_for
from messaging.dip import RCP_CODES, DipTransportError, status_entry
from messaging.exceptions.models import MessageException
from messaging.exchanges import record_failure
from messaging.models import DipExchange, ExchangeOperation, Message
from messaging.store.states import InboundState
from tenants.models import Connection

logger = logging.getLogger(__name__)


def _already_reported(transaction_ids: list[str]) -> set[str]:
    done: set[str] = set()
    for ids in DipExchange.objects.filter(
        operation=ExchangeOperation.STATUS,
        http_status=201,
        transaction_ids__overlap=transaction_ids,
    ).values_list("transaction_ids", flat=True):
        done.update(ids)
    return done


def send_refusal_status(*, tenant_id: UUID | str, message_ids: Sequence[int]) -> int:
    """Report refused (``invalid``) messages to the DIP; return how many the DIP accepted.
    Raises DipTransportError (after recording it) when the DIP could not be reached, so the
    task retries."""
    with tenant_context(tenant_id):
        rows = list(
            Message.objects.filter(
                id__in=list(message_ids), state=InboundState.INVALID, transaction_id__isnull=False
            ).values("id", "connection_id", "transaction_id", "sender_unique_reference",
                     "correlation_id")
        )  # fmt: skip
        reported = _already_reported([r["transaction_id"] or "" for r in rows])
        codes = {
            e.message_id: (e.detail.get("rcp") or "RCP1022", e.title)
            for e in MessageException.objects.filter(message_id__in=[r["id"] for r in rows])
        }
        by_connection: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["transaction_id"] not in reported:
                by_connection[row["connection_id"]].append(dict(row))
        connections = {
            c.pk: c
            for c in Connection.objects.select_related("identity").filter(pk__in=by_connection)
        }
    sent = 0
    for connection_id, members in by_connection.items():
        connection = connections[connection_id]
        entries = []
        for member in members:
            code, why = codes.get(member["id"], ("RCP1022", ""))
            meaning = RCP_CODES[code].meaning if code in RCP_CODES else "Message refused"
            entries.append(
                status_entry(
                    code=code,
                    text=meaning,
                    sender_dip_id=connection.identity.dip_id,
                    transaction_id=member["transaction_id"],
                    sender_reference=member["sender_unique_reference"] or None,
                    correlation_id=member["correlation_id"] or None,
                    help_text=why or None,
                )
            )
        transaction_ids = [row["transaction_id"] for row in members]
        started_at = timezone.now()
        with tenant_context(tenant_id):
            client = dip_client_for(connection=connection)  # keys are read under the tenant
        try:
            with client:  # the DIP is called outside any database transaction
                response = client.send_status(entries)
        except DipTransportError as exc:
            with tenant_context(tenant_id):
                record_failure(
                    connection=connection,
                    operation=ExchangeOperation.STATUS,
                    error=exc,
                    started_at=started_at,
                )
            raise
        with tenant_context(tenant_id):
            DipExchange.objects.create(
                connection=connection,
                operation=ExchangeOperation.STATUS,
                method=response.method,
                url=response.url[:500],
                started_at=started_at,
                http_status=response.status,
                outcome=response.action.value,
                error="" if response.ok else response.reason[:500],
                body_sha256=response.body_sha256,
                signing_certificate_fingerprint=response.signing_certificate_fingerprint,
                mtls_certificate_fingerprint=response.mtls_certificate_fingerprint,
                sender_references=[
                    r["sender_unique_reference"] for r in members if r["sender_unique_reference"]
                ],
                transaction_ids=transaction_ids,
            )
        if response.ok:
            sent += len(members)
        else:
            logger.warning(
                "inbound.status_refused",
                extra={"status": response.status, "connection_id": connection_id},
            )
    return sent
