"""Receiving one DIP push: resolve the callback token, verify the four ``X-DIP-*`` headers
against the connection's trust anchors, parse, and store the delivery and its messages in one
transaction; answer as the DIP expects.

This is the whole of the webhook's work and it never waits on another system: no broker call
happens before the answer (the processing task is enqueued after commit, and the sweeper finds
the delivery if that enqueue is lost). Every refusal keeps the request's hash and headers as a
security or technical event; a failure to persist answers 503 so the DIP pushes again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import zstandard
from cryptography import x509
from django.conf import settings
from django.db import DatabaseError, transaction

from core.audit import record_event
from core.tenancy import tenant_context
from messaging.dip import SignatureError, verify_request
from messaging.dip.signing import SIGNATURE_HEADERS, VerifiedSignature
from messaging.dip.webhook import (
    RCP_PROCESSING,
    RCP_SIGNATURE,
    RCP_SUCCESS,
    DeliveryError,
    PushedMessage,
    accepted_response,
    parse_push,
    refusal_response,
    response_entry,
    standard_response,
)
from messaging.inbound import metrics
from messaging.inbound.registration import resolve_status_token
from messaging.outbound.loop import apply_status_messages
from messaging.store.services import (
    ZSTD_LEVEL,
    DeliveryRefused,
    InboundDelivery,
    InboundMessageFacts,
    store_inbound_delivery,
    store_inbound_group,
)
from tenants.models import (
    Certificate,
    CertificatePurpose,
    CertificateStatus,
    Channel,
    Connection,
)
from tenants.selectors import resolve_webhook_token

logger = logging.getLogger(__name__)

JSON = "application/json"
# The headers kept as evidence of a refused request (never a body: it may be anything).
EVIDENCE_HEADERS = (*SIGNATURE_HEADERS, "X-DIP-MPO", "Content-Type", "Content-Length", "User-Agent")
ENDPOINT_TTL_SECONDS = 30.0


@dataclass(frozen=True)
class Answer:
    """What the webhook answers: status, body and extra headers."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delivery_id: int | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class PreparedPush:
    """A push whose signature verified and whose body parsed, ready to store."""

    endpoint: Endpoint
    headers: Mapping[str, str]
    body: bytes
    messages: list[PushedMessage]
    signer_fingerprint: str
    answer_body: bytes
    body_sha256: bytes


@dataclass(frozen=True)
class Endpoint:
    """What a callback token stands for, cached briefly so a busy channel costs no look-ups."""

    tenant_id: str
    channel_id: int
    connection_id: int
    interface_id: str
    responder_dip_id: str
    trust_anchors: tuple[x509.Certificate, ...]
    expires: float


_endpoints: dict[str, Endpoint] = {}
_endpoints_lock = threading.Lock()


def forget_endpoints() -> None:
    """Drop the endpoint cache (tests, and after a trust anchor changes)."""
    with _endpoints_lock:
        _endpoints.clear()


def cached_endpoint(token: str) -> Endpoint | None:
    """The endpoint of ``token`` if it is cached and fresh (no database access), else None."""
    with _endpoints_lock:
        cached = _endpoints.get(token)
    if cached is not None and cached.expires > time.monotonic():
        return cached
    return None


def _load_endpoint(token: str) -> Endpoint | None:
    cached = cached_endpoint(token)
    if cached is not None:
        return cached
    resolved = resolve_webhook_token(token=token)
    if resolved is None:
        return None
    tenant_id, channel_id = resolved
    with tenant_context(tenant_id):
        channel = (
            Channel.objects.select_related("connection__identity").filter(pk=channel_id).first()
        )
        if channel is None or channel.direction != "inbound":
            return None
        anchors = [
            x509.load_pem_x509_certificate(pem.encode())
            for pem in Certificate.objects.filter(
                connection_id=channel.connection_id,
                purpose=CertificatePurpose.TRUST_ANCHOR,
                status=CertificateStatus.ACTIVE,
            ).values_list("certificate_pem", flat=True)
        ]
    endpoint = Endpoint(
        tenant_id=tenant_id,
        channel_id=channel_id,
        connection_id=channel.connection_id,
        interface_id=channel.interface_id,
        responder_dip_id=channel.connection.identity.dip_id,
        trust_anchors=tuple(anchors),
        expires=time.monotonic() + ENDPOINT_TTL_SECONDS,
    )
    with _endpoints_lock:
        _endpoints[token] = endpoint
    return endpoint


def evidence(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The hash, size and signature headers of a request, for a refusal's event."""
    lowered = {k.lower(): v for k, v in headers.items()}
    kept = {
        name: lowered[name.lower()][:8192] for name in EVIDENCE_HEADERS if name.lower() in lowered
    }
    return {"body_sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "headers": kept}


def _refuse(
    *,
    action: str,
    category: str,
    status: int,
    reason: str,
    headers: Mapping[str, str],
    body: bytes,
    source_address: str | None,
    endpoint: Endpoint | None,
    answer_body: bytes = b"",
    extra: Mapping[str, Any] | None = None,
) -> Answer:
    metrics.refused(action)
    detail = {"reason": reason[:500], **evidence(headers, body), **(extra or {})}
    logger.warning(action, extra={"status": status, "reason": reason[:200]})
    try:
        if endpoint is not None:
            with tenant_context(endpoint.tenant_id):
                record_event(
                    action=action,
                    actor="dip",
                    category=category,
                    object_type="channel",
                    object_id=endpoint.channel_id,
                    source_address=source_address,
                    detail=detail,
                )
        else:
            with transaction.atomic():
                record_event(
                    action=action,
                    actor="dip",
                    category=category,
                    source_address=source_address,
                    detail=detail,
                )
    except DatabaseError:
        # The refusal stands without its evidence row; the log line above still carries it.
        logger.exception("webhook.evidence_not_written")
    return Answer(
        status=status,
        body=answer_body,
        headers=(("Content-Type", JSON),) if answer_body else (),
        tenant_id=endpoint.tenant_id if endpoint else None,
    )


def prepare_push(
    *,
    token: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    source_address: str | None = None,
    now: dt.datetime | None = None,
) -> Answer | PreparedPush:
    """Everything of a push but storing it: resolve ``token``, verify the signature against the
    callback ``url`` (exactly as registered with the DIP), parse. Returns the refusal's answer
    (recorded as an event), or the push ready to store."""
    try:
        endpoint = _load_endpoint(token)
    except DatabaseError:
        logger.exception("webhook.lookup_failed")
        metrics.refused("webhook.unavailable")
        return Answer(
            503, headers=(("Retry-After", str(settings.BUSBAR_INGEST_RETRY_AFTER_SECONDS)),)
        )
    if endpoint is None:
        return _refuse(
            action="webhook.unknown_channel",
            category="security",
            status=404,
            reason="no inbound channel has this callback token",
            headers=headers,
            body=body,
            source_address=source_address,
            endpoint=None,
            extra={"token_prefix": token[:4]},
        )
    try:
        verified = _verify(endpoint, url, headers, body, now)
    except SignatureError as exc:
        return _refuse(
            action="webhook.bad_signature",
            category="security",
            status=400,
            reason=exc.reason,
            headers=headers,
            body=body,
            source_address=source_address,
            endpoint=endpoint,
            answer_body=refusal_response(
                code=RCP_SIGNATURE,
                reason=exc.reason,
                responder_dip_id=endpoint.responder_dip_id,
                body=body,
            ),
            extra={"check": exc.kind},
        )
    try:
        messages = parse_push(body, max_messages=settings.BUSBAR_WEBHOOK_MAX_MESSAGES)
    except DeliveryError as exc:
        return _refuse(
            action="webhook.malformed",
            category="security",
            status=exc.status,
            reason=exc.reason,
            headers=headers,
            body=body,
            source_address=source_address,
            endpoint=endpoint,
            answer_body=refusal_response(
                code=exc.code,
                reason=exc.reason,
                responder_dip_id=endpoint.responder_dip_id,
                body=body if exc.status != 413 else None,
            ),
            extra={"signed_by": verified.fingerprint_sha256},
        )
    return _prepared(endpoint, headers, body, messages, verified)


def _verify(
    endpoint: Endpoint,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime | None,
) -> VerifiedSignature:
    return verify_request(
        method="POST",
        url=url,
        body=body,
        headers=headers,
        trust_anchors=endpoint.trust_anchors,
        max_skew=dt.timedelta(seconds=settings.BUSBAR_WEBHOOK_SKEW_SECONDS),
        now=now,
    )


def _prepared(
    endpoint: Endpoint,
    headers: Mapping[str, str],
    body: bytes,
    messages: list[PushedMessage],
    verified: VerifiedSignature,
) -> PreparedPush:
    return PreparedPush(
        endpoint=endpoint,
        headers=headers,
        body=body,
        messages=messages,
        signer_fingerprint=verified.fingerprint_sha256,
        answer_body=accepted_response(messages, responder_dip_id=endpoint.responder_dip_id),
        body_sha256=verified.body_sha256,
    )


def prepare_push_quietly(
    *, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
) -> PreparedPush | None:
    """``prepare_push`` for a push whose endpoint is at hand, touching no database and
    recording nothing: the push ready to store, or None when it would be refused (the caller
    then hands it to ``prepare_push``, which checks it again and records the refusal)."""
    try:
        verified = _verify(endpoint, url, headers, body, None)
        messages = parse_push(body, max_messages=settings.BUSBAR_WEBHOOK_MAX_MESSAGES)
    except (SignatureError, DeliveryError):
        return None
    return _prepared(endpoint, headers, body, messages, verified)


def receive_push(
    *,
    token: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    source_address: str | None = None,
    now: dt.datetime | None = None,
) -> Answer:
    """Handle one push to the callback ``url`` (exactly as registered with the DIP) whose path
    carries ``token``, in a transaction of its own. Returns the answer; never raises for anything
    the sender sent. (The ingest server stores pushes in groups instead: ``commit_group``.)

    201 with one RCP0000 entry per message once the delivery is committed (a repeated delivery
    gets the same answer and stores nothing new); 404 for an unknown token; 400 with RCP9999 for
    a signature that does not verify; 400/413 with RCP1001/RCP1043 for a body that cannot be
    accepted; 503 when the database cannot store it (the DIP retries).
    """
    prepared = prepare_push(
        token=token, url=url, headers=headers, body=body, source_address=source_address, now=now
    )
    if isinstance(prepared, Answer):
        return prepared
    endpoint = prepared.endpoint
    try:
        delivery_id = store_push(
            endpoint=endpoint,
            headers=headers,
            body=body,
            messages=prepared.messages,
            signer_fingerprint=prepared.signer_fingerprint,
            answer_body=prepared.answer_body,
        )
    except DatabaseError:
        logger.exception("webhook.store_failed", extra={"channel_id": endpoint.channel_id})
        return not_stored(endpoint)
    metrics.accepted(len(prepared.messages))
    return Answer(
        201,
        prepared.answer_body,
        (("Content-Type", JSON),),
        delivery_id=delivery_id,
        tenant_id=endpoint.tenant_id,
    )


def not_stored(endpoint: Endpoint) -> Answer:
    """503 RCP0005-style: the DIP pushes again after ``Retry-After``."""
    metrics.refused("webhook.store_failed")
    return Answer(
        503,
        refusal_response(
            code=RCP_PROCESSING,
            reason="the delivery could not be stored; push it again",
            responder_dip_id=endpoint.responder_dip_id,
        ),
        (
            ("Content-Type", JSON),
            ("Retry-After", str(settings.BUSBAR_INGEST_RETRY_AFTER_SECONDS)),
        ),
    )


def _kept_headers(headers: Mapping[str, str], signer_fingerprint: str) -> dict[str, Any]:
    lowered = {k.lower(): v for k, v in headers.items()}
    kept: dict[str, Any] = {
        name: lowered[name.lower()] for name in EVIDENCE_HEADERS if name.lower() in lowered
    }
    kept["signer_sha256"] = signer_fingerprint
    return kept


def _facts(body: bytes, messages: list[PushedMessage]) -> list[InboundMessageFacts]:
    return [
        InboundMessageFacts(
            offset=m.offset,
            length=m.length,
            sha256=hashlib.sha256(body[m.offset : m.offset + m.length]).digest(),
            transaction_id=m.transaction_id,
            interface_id=m.interface_id or "",
            schema_version=m.schema_version or "",
            event_code=m.event_code or "",
            sender_unique_reference=m.sender_unique_reference or "",
            correlation_id=m.correlation_id or "",
            mpan=m.mpan or "",
        )
        for m in messages
    ]


_compressors = threading.local()


def to_delivery(prepared: PreparedPush) -> InboundDelivery:
    """The push as the group stores it: hashed and compressed here, on the request's thread,
    so the thread committing the group spends its time on the database only."""
    compressor = getattr(_compressors, "zstd", None)
    if compressor is None:
        compressor = _compressors.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    endpoint, body = prepared.endpoint, prepared.body
    return InboundDelivery(
        tenant_id=endpoint.tenant_id,
        connection_id=endpoint.connection_id,
        channel_id=endpoint.channel_id,
        body_zstd=compressor.compress(body),
        body_sha256=prepared.body_sha256,
        body_size=len(body),
        headers=_kept_headers(prepared.headers, prepared.signer_fingerprint),
        messages=_facts(body, prepared.messages),
        response_body=prepared.answer_body,
    )


def commit_group(
    conn: psycopg.Connection[Any], pushes: Sequence[tuple[PreparedPush, InboundDelivery]]
) -> list[Answer]:
    """Store pushes that arrived together in one transaction and answer each (group commit).

    A push the database refuses gets 503 alone; if the group's transaction cannot commit, every
    push in it gets 503 (the DIP pushes again) and none was stored. A 201 is only ever returned
    after the commit that made its delivery durable. When it returns 503s for a whole group,
    ``conn`` is closed (it may be broken or mid-transaction): the caller opens a new one.
    """
    try:
        outcomes = store_inbound_group(conn, [delivery for _prepared, delivery in pushes])
    except Exception:
        # The connection broke, the commit failed, or anything unforeseen: nothing of the group
        # is stored (its transaction never committed), so nothing of it is acknowledged.
        logger.exception("webhook.group_store_failed", extra={"pushes": len(pushes)})
        conn.close()
        return [not_stored(prepared.endpoint) for prepared, _delivery in pushes]
    answers = []
    for (prepared, _delivery), outcome in zip(pushes, outcomes, strict=True):
        endpoint = prepared.endpoint
        if isinstance(outcome, DeliveryRefused):
            logger.error(
                "webhook.store_failed",
                extra={"channel_id": endpoint.channel_id, "error": str(outcome.error)[:300]},
            )
            answers.append(not_stored(endpoint))
            continue
        if any(outcome.duplicate):
            metrics.duplicates(sum(outcome.duplicate))
        metrics.accepted(len(prepared.messages))
        answers.append(
            Answer(
                201,
                prepared.answer_body,
                (("Content-Type", JSON),),
                delivery_id=outcome.raw_id,
                tenant_id=endpoint.tenant_id,
            )
        )
    return answers


def store_push(
    *,
    endpoint: Endpoint,
    headers: Mapping[str, str],
    body: bytes,
    messages: list[PushedMessage],
    signer_fingerprint: str,
    answer_body: bytes,
) -> int:
    """Store the delivery (exact bytes, its signature headers, the answer given) and one row per
    message in one transaction, deduplicated on the DIP transaction id. Returns the delivery's
    raw id. Raises DatabaseError when it could not be stored (nothing is then half-written)."""
    kept = _kept_headers(headers, signer_fingerprint)
    facts = _facts(body, messages)
    with tenant_context(endpoint.tenant_id):
        stored = store_inbound_delivery(
            tenant_id=endpoint.tenant_id,
            connection_id=endpoint.connection_id,
            channel_id=endpoint.channel_id,
            body=body,
            headers=kept,
            messages=facts,
            response_status=201,
            response_body=answer_body,
        )
    if any(stored.duplicate):
        metrics.duplicates(sum(stored.duplicate))
    return stored.raw_id


def refuse_oversized(
    kind: str, token: str, headers: Mapping[str, str], limit: int, source_address: str | None
) -> Answer:
    """Record a body refused for its size (413, never retried by the DIP); the body was not
    read, so the evidence is its headers and declared length."""
    endpoint = None
    if kind == "push":
        try:
            endpoint = _load_endpoint(token)
        except DatabaseError:
            endpoint = None
    return _refuse(
        action="webhook.oversized",
        category="security",
        status=413,
        reason=f"the body is larger than {limit} bytes",
        headers=headers,
        body=b"",
        source_address=source_address,
        endpoint=endpoint,
        extra={"limit": limit, "kind": kind},
    )


# One quick retry, then give up: the sweeper is the safety net, and a long broker retry would
# only back up the enqueuing thread.
_ENQUEUE_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def enqueue_processing(tenant_id: str, delivery_id: int) -> None:
    """Hand a stored delivery to the inbound workers. Best effort by design: when the broker is
    away the sweeper re-enqueues the delivery's received messages later."""
    from messaging.inbound.tasks import process_delivery_task  # the tasks import this module

    try:
        process_delivery_task.apply_async(
            (tenant_id, delivery_id), retry=True, retry_policy=_ENQUEUE_RETRY
        )
    except Exception as exc:  # the broker is down: the sweeper will find the delivery
        logger.warning(
            "webhook.enqueue_failed", extra={"delivery_id": delivery_id, "error": str(exc)[:200]}
        )


def _status_entries(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise DeliveryError(f"malformed JSON: {err}") from err
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise DeliveryError("the body is not a non-empty array of status objects")
    return data


def receive_status_push(
    *,
    token: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    source_address: str | None = None,
    now: dt.datetime | None = None,
) -> Answer:
    """Handle a push on a connection's status webhook (a ``StandardResponseArray`` about
    messages Busbar sent). Verified like a message push; the statuses are recorded against the
    connection, applied to the outbound messages they name (``apply_status_messages``: their
    state moves and each change is published to the tenant's systems) in the same transaction,
    and acknowledged with RCP0000."""
    resolved = resolve_status_token(token)
    if resolved is None:
        return _refuse(
            action="webhook.unknown_channel",
            category="security",
            status=404,
            reason="no connection has this status callback",
            headers=headers,
            body=body,
            source_address=source_address,
            endpoint=None,
        )
    tenant_id, connection_id = resolved
    try:
        with tenant_context(tenant_id):
            connection = (
                Connection.objects.select_related("identity").filter(pk=connection_id).first()
            )
            anchors = [
                x509.load_pem_x509_certificate(pem.encode())
                for pem in Certificate.objects.filter(
                    connection_id=connection_id,
                    purpose=CertificatePurpose.TRUST_ANCHOR,
                    status=CertificateStatus.ACTIVE,
                ).values_list("certificate_pem", flat=True)
            ]
    except DatabaseError:
        logger.exception("webhook.lookup_failed")
        return Answer(
            503, headers=(("Retry-After", str(settings.BUSBAR_INGEST_RETRY_AFTER_SECONDS)),)
        )
    if connection is None:
        return _refuse(
            action="webhook.unknown_channel",
            category="security",
            status=404,
            reason="the status callback names no connection",
            headers=headers,
            body=body,
            source_address=source_address,
            endpoint=None,
        )
    endpoint = Endpoint(
        tenant_id=tenant_id,
        channel_id=0,
        connection_id=connection_id,
        interface_id="status",
        responder_dip_id=connection.identity.dip_id,
        trust_anchors=tuple(anchors),
        expires=0.0,
    )
    try:
        verify_request(
            method="POST",
            url=url,
            body=body,
            headers=headers,
            trust_anchors=endpoint.trust_anchors,
            max_skew=dt.timedelta(seconds=settings.BUSBAR_WEBHOOK_SKEW_SECONDS),
            now=now,
        )
        entries = _status_entries(body)
    except SignatureError as exc:
        return _refuse(
            action="webhook.bad_signature",
            category="security",
            status=400,
            reason=exc.reason,
            headers=headers,
            body=body,
            source_address=source_address,
            endpoint=endpoint,
            answer_body=refusal_response(
                code=RCP_SIGNATURE, reason=exc.reason, responder_dip_id=endpoint.responder_dip_id
            ),
            extra={"check": exc.kind, "connection_id": connection_id},
        )
    except DeliveryError as exc:
        return _refuse(
            action="webhook.malformed",
            category="security",
            status=exc.status,
            reason=exc.reason,
            headers=headers,
            body=body,
            source_address=source_address,
            endpoint=endpoint,
            answer_body=refusal_response(
                code=exc.code, reason=exc.reason, responder_dip_id=endpoint.responder_dip_id
            ),
            extra={"connection_id": connection_id},
        )
    try:
        with tenant_context(tenant_id):
            record_event(
                action="dip.status_received",
                actor="dip",
                object_type="connection",
                object_id=connection_id,
                source_address=source_address,
                detail={
                    **evidence(headers, body),
                    "statuses": [
                        {
                            "transactionID": e.get("transactionID"),
                            "senderUniqueReference": e.get("senderUniqueReference"),
                            "message": e.get("message"),
                        }
                        for e in entries[:1000]
                    ],
                },
            )
            # In the same transaction as the evidence: the outbound messages these statuses
            # name move (and their client systems hear of it), or nothing is kept and the DIP,
            # answered 503, pushes again (the moves are conditional, so a repeat changes nothing).
            applied = apply_status_messages(tenant_id=tenant_id, entries=entries)
        logger.info(
            "webhook.status_applied",
            extra={
                "connection_id": connection_id,
                "acknowledged": len(applied.acknowledged),
                "rejected": len(applied.rejected),
                "unmatched": len(applied.unmatched),
            },
        )
    except DatabaseError:
        logger.exception("webhook.store_failed", extra={"connection_id": connection_id})
        return Answer(
            503, headers=(("Retry-After", str(settings.BUSBAR_INGEST_RETRY_AFTER_SECONDS)),)
        )
    answer = standard_response(
        response_entry(
            code=RCP_SUCCESS,
            responder_dip_id=endpoint.responder_dip_id,
            transaction_id=e.get("transactionID")
            if isinstance(e.get("transactionID"), str)
            else None,
            sender_reference=e.get("senderUniqueReference")
            if isinstance(e.get("senderUniqueReference"), str)
            else None,
        )
        for e in entries
    )
    return Answer(201, answer, (("Content-Type", JSON),), tenant_id=tenant_id)
