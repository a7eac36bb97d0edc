"""Reads for the console and the API: messages searched by what operators know them by, one
message with everything about it, and the exception queue. Inside the tenant's context."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from django.db.models import QuerySet

from messaging.dip.signing import HEADER_CERTIFICATE, certificate_fingerprint
from messaging.events.models import Event
from messaging.exceptions.models import MessageException
from messaging.models import Finding, Message, RawBlob, Transition
from messaging.store.ids import id_floor
from messaging.store.services import message_bytes, raw_body
from tenants.selectors import in_environment

SEARCH_FIELDS = ("mpan", "sender_unique_reference", "transaction_id", "correlation_id")


@dataclass(frozen=True)
class MessageFilter:
    """What an operator searches by. ``text`` matches MPAN, sender reference, transaction or
    correlation id exactly (the indexed columns); dates are inclusive UTC days."""

    text: str = ""
    interface_id: str = ""
    event_code: str = ""
    state: str = ""
    direction: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    before_id: int | None = None


def is_mpan(text: str) -> bool:
    """Whether a search text is read as an MPAN (13 digits)."""
    return text.strip().isdigit() and len(text.strip()) == 13


def filter_messages(*, filters: MessageFilter) -> QuerySet[Message]:
    """The messages matching ``filters``, newest first, unsliced (the list pages it, the export
    streams it). Every filter is served by an index led by tenant_id; dates also bound the id,
    which is time-ordered, so only the months they cover are read."""
    # an API key sees only its environment's messages
    qs: QuerySet[Message] = in_environment(Message.objects.all(), "connection__environment")
    text = filters.text.strip()
    if text:
        if is_mpan(text):
            qs = qs.filter(mpan=text)
        elif text.startswith("S-"):
            qs = qs.filter(sender_unique_reference=text)
        elif text.startswith("T-"):
            qs = qs.filter(transaction_id=text)
        else:
            qs = (
                qs.filter(correlation_id=text)
                | qs.filter(transaction_id=text)
                | qs.filter(sender_unique_reference=text)
            )
    if filters.interface_id:
        qs = qs.filter(interface_id=filters.interface_id.upper())
    if filters.event_code:
        qs = qs.filter(event_code=filters.event_code)
    if filters.state:
        qs = qs.filter(state=filters.state)
    if filters.direction:
        qs = qs.filter(direction=filters.direction)
    if filters.date_from:
        start = dt.datetime.combine(filters.date_from, dt.time(), dt.UTC)
        # created_at is the transaction's start, the id a moment later: never before it.
        qs = qs.filter(created_at__gte=start, id__gte=id_floor(start))
    if filters.date_to:
        end = dt.datetime.combine(filters.date_to + dt.timedelta(days=1), dt.time(), dt.UTC)
        # An id is made within its transaction, so an hour's slack covers any transaction.
        qs = qs.filter(created_at__lt=end, id__lt=id_floor(end + dt.timedelta(hours=1)))
    if filters.before_id:
        qs = qs.filter(id__lt=filters.before_id)
    return qs.order_by("-id")


def list_messages(*, filters: MessageFilter, limit: int = 50) -> list[Message]:
    """Newest first, ``limit`` at a time; page on with ``before_id`` (the last id shown)."""
    return list(filter_messages(filters=filters)[:limit])


def list_linked_messages(*, message: Message, limit: int = 50) -> list[Message]:
    """Other messages of the same business chain, newest first: the same business key (which
    carries the MPAN and the chain's reference), or for a message without one, the same MPAN.
    Both through indexes led by tenant_id."""
    qs: QuerySet[Message] = in_environment(Message.objects.all(), "connection__environment")
    if message.business_key:
        qs = qs.filter(business_key=message.business_key)
    elif message.mpan:
        qs = qs.filter(mpan=message.mpan)
    else:
        return []
    return list(qs.exclude(id=message.id).order_by("-id")[:limit])


@dataclass(frozen=True)
class SigningCertificate:
    subject: str
    issuer: str
    serial: str
    fingerprint_sha256: str
    not_after: dt.datetime


@dataclass(frozen=True)
class MessageDetail:
    message: Message
    timeline: list[Transition]
    findings: list[Finding]
    exceptions: list[MessageException]
    events: list[Event]
    delivery: RawBlob | None
    signer: SigningCertificate | None
    raw: str | None  # the message's exact bytes as text (content: only for roles that see it)


def _signer(delivery: RawBlob | None) -> SigningCertificate | None:
    header = (delivery.headers or {}).get(HEADER_CERTIFICATE) if delivery else None
    if not header:
        return None
    try:
        certificate = x509.load_pem_x509_certificates(base64.b64decode(header))[0]
    except (binascii.Error, ValueError, IndexError):
        return None
    return SigningCertificate(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial=format(certificate.serial_number, "x"),
        fingerprint_sha256=certificate_fingerprint(certificate),
        not_after=certificate.not_valid_after_utc,
    )


def get_message_detail(*, message_id: int, with_content: bool) -> MessageDetail | None:
    """Everything about one of the tenant's messages, or None (not found and not this tenant's
    look the same). ``with_content`` adds the exact bytes and the normalised events' payloads."""
    message = in_environment(
        Message.objects.filter(id=message_id), "connection__environment"
    ).first()
    if message is None:
        return None
    delivery = RawBlob.objects.filter(id=message.raw_id).first() if message.raw_id else None
    raw = None
    if with_content and message.raw_id is not None:
        body = raw_body(tenant_id=str(message.tenant_id), raw_id=message.raw_id)
        data = message_bytes(message, body=body)
        try:
            raw = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        except ValueError:
            raw = data.decode("utf-8", errors="replace")
    return MessageDetail(
        message=message,
        timeline=list(Transition.objects.filter(message_id=message_id).order_by("at", "id")),
        findings=list(Finding.objects.filter(message_id=message_id).order_by("id")),
        exceptions=list(MessageException.objects.filter(message_id=message_id).order_by("id")),
        events=list(Event.objects.filter(source_message_id=message_id).order_by("id"))
        if with_content
        else [],
        delivery=delivery,
        signer=_signer(delivery),
        raw=raw,
    )


def describe_message(message: Message) -> dict[str, Any]:
    """A message's metadata as the API returns it (no payload)."""
    return {
        "id": message.id,
        "direction": message.direction,
        "interface_id": message.interface_id,
        "event_code": message.event_code,
        "schema_version": message.schema_version,
        "transaction_id": message.transaction_id,
        "sender_unique_reference": message.sender_unique_reference,
        "correlation_id": message.correlation_id,
        "mpan": message.mpan,
        "state": message.state,
        "attempts": message.attempts,
        "created_at": message.created_at,
        "state_changed_at": message.state_changed_at,
        "connection_id": message.connection_id,
        "channel_id": message.channel_id,
    }
