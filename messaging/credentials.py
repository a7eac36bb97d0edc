"""A connection's credentials put to work: the DIP client built from its active (or candidate)
certificates, sending a batch with them, the rotation canary, and the request to rotate. Every
signed request leaves its evidence through ``messaging.exchanges``.

Keys are decrypted here, in the worker, only for as long as a client is being built; the client
holds them in an SSL context and a signing key object, never on disk or in a log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from django.db import transaction
from django.utils import timezone

from core.audit import record_event
from core.models import AuditEvent
from messaging.dip import DipClient, DipTransportError, SubmitResult, encode_batch
from messaging.exchanges import record_call, record_failure, record_submit
from messaging.models import ExchangeOperation
from tenants import certificates
from tenants.certificates import CanaryResult, CertificateError, KeyMaterial
from tenants.models import Certificate, CertificatePurpose, CertificateStatus, Connection
from tenants.services import get_connection_api_key

logger = logging.getLogger(__name__)

# The canary asks the DIP to replay a one-second window long past: a request that is signed,
# carries the API key and crosses mutual TLS exactly as a submission does, so the DIP checks the
# whole credential set, yet it changes nothing and sends no market message (safe in production).
CANARY_WINDOW_START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
CANARY_INTERFACE = "IF-021"


def _pem_key(material: KeyMaterial) -> bytes:
    return material.private_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _material(connection: Connection, purpose: str, override: Certificate | None) -> KeyMaterial:
    if override is not None and override.purpose == purpose:
        return certificates.load_key_material(certificate=override)
    active = certificates.active_certificate(connection=connection, purpose=purpose)
    if active is None:
        raise CertificateError(
            f"connection {connection} has no active {purpose} certificate: import and activate one"
        )
    return certificates.load_key_material(certificate=active)


def trust_anchor_pem(*, connection: Connection) -> bytes:
    anchors = Certificate.objects.filter(
        connection=connection,
        purpose=CertificatePurpose.TRUST_ANCHOR,
        status=CertificateStatus.ACTIVE,
    ).order_by("created_at")
    pem = "".join(anchor.certificate_pem for anchor in anchors).encode()
    if not pem:
        raise CertificateError(
            f"connection {connection} has no DIP trust anchor to verify the DIP with"
        )
    return pem


def dip_client_for(*, connection: Connection, candidate: Certificate | None = None) -> DipClient:
    """A client for ``connection`` with its active certificates, or with ``candidate`` standing in
    for the active one of its purpose (the canary). Raises CertificateError when one is missing."""
    signing = _material(connection, CertificatePurpose.SIGNING, candidate)
    mtls = _material(connection, CertificatePurpose.MTLS, candidate)
    return DipClient(
        base_url=connection.dip_base_url,
        api_key=get_connection_api_key(connection=connection),
        mtls_certificate_pem=mtls.certificate_pem + mtls.chain_pem,
        mtls_private_key_pem=_pem_key(mtls),
        signing_certificate_pem=signing.certificate_pem,
        signing_private_key_pem=_pem_key(signing),
        server_ca_pem=trust_anchor_pem(connection=connection),
    )


@dataclass(frozen=True)
class ClientKey:
    """What a pooled client was built from: a client is reused only while all of it holds."""

    tenant_id: str
    connection_id: int
    base_url: str
    signing_fingerprint: str
    mtls_fingerprint: str
    anchors: str
    api_key_version: str


def client_key(*, connection: Connection) -> ClientKey:
    """The connection's current credential set, read without decrypting anything (one query).

    Raises CertificateError when an active signing or mTLS certificate is missing.
    """
    rows = list(
        Certificate.objects.filter(
            connection=connection,
            status=CertificateStatus.ACTIVE,
            purpose__in=(
                CertificatePurpose.SIGNING,
                CertificatePurpose.MTLS,
                CertificatePurpose.TRUST_ANCHOR,
            ),
        )
        .order_by("purpose", "-activated_at", "created_at")
        .values_list("purpose", "fingerprint_sha256")
    )
    found: dict[str, list[str]] = {}
    for purpose, fingerprint in rows:
        found.setdefault(purpose, []).append(fingerprint)
    for purpose in (CertificatePurpose.SIGNING, CertificatePurpose.MTLS):
        if not found.get(purpose):
            raise CertificateError(
                f"connection {connection} has no active {purpose} certificate: import and "
                "activate one"
            )
    anchors = hashlib.sha256(
        ",".join(sorted(found.get(CertificatePurpose.TRUST_ANCHOR, []))).encode()
    ).hexdigest()
    # The ciphertext changes whenever the key is replaced; its hash names the version.
    api_key_version = hashlib.sha256(connection.api_key_encrypted.encode()).hexdigest()[:16]
    return ClientKey(
        tenant_id=str(connection.tenant_id),
        connection_id=connection.id,
        base_url=connection.dip_base_url,
        signing_fingerprint=found[CertificatePurpose.SIGNING][0],
        mtls_fingerprint=found[CertificatePurpose.MTLS][0],
        anchors=anchors,
        api_key_version=api_key_version,
    )


class DipClientPool:
    """One pooled DIP client per connection in this process, kept while its credentials hold.

    Building a client decrypts two keys and makes an SSL context (milliseconds of CPU and a TLS
    handshake per new HTTP connection), so the send path reuses one per connection. Each use
    compares the connection's current certificate fingerprints, trust anchors, base URL and API
    key version with those the client was built from; any change (a rotation, a revocation, a new
    key) replaces it, so a rotation in another process is noticed at the next batch. ``drop``
    forgets a connection's client at once (the rotation in this process calls it). A replaced
    client is closed only after ``grace`` seconds, so a request another thread has in flight on
    it still gets its answer rather than a dropped connection (an answer lost is a resend).
    """

    def __init__(self, grace: float = 120.0) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, int], tuple[ClientKey, DipClient]] = {}
        self._retired: list[tuple[float, DipClient]] = []

    def _retire(self, client: DipClient) -> None:
        now = time.monotonic()
        with self._lock:
            self._retired.append((now, client))
            due = [c for at, c in self._retired if now - at >= self.grace]
            self._retired = [(at, c) for at, c in self._retired if now - at < self.grace]
        for old in due:
            old.close()

    def get(self, *, connection: Connection) -> DipClient:
        """The client for ``connection``'s active credentials. Raises CertificateError."""
        key = client_key(connection=connection)
        slot = (key.tenant_id, key.connection_id)
        with self._lock:
            held = self._clients.get(slot)
            if held is not None and held[0] == key:
                return held[1]
        client = dip_client_for(connection=connection)
        if (
            client.signing_certificate_fingerprint != key.signing_fingerprint
            or client.mtls_certificate_fingerprint != key.mtls_fingerprint
        ):
            # The inventory moved between the two reads: build again next time.
            return client
        with self._lock:
            old = self._clients.get(slot)
            self._clients[slot] = (key, client)
        if old is not None and old[1] is not client:
            self._retire(old[1])
            logger.info(
                "dip.client_replaced",
                extra={"connection_id": connection.id, "signing": key.signing_fingerprint[:16]},
            )
        return client

    def drop(self, *, tenant_id: object, connection_id: int) -> None:
        with self._lock:
            held = self._clients.pop((str(tenant_id), connection_id), None)
        if held is not None:
            self._retire(held[1])

    def clear(self) -> None:
        """Close every client now (worker shutdown, tests)."""
        with self._lock:
            held = [client for _key, client in self._clients.values()]
            held += [client for _at, client in self._retired]
            self._clients.clear()
            self._retired.clear()
        for client in held:
            client.close()

    def __len__(self) -> int:
        return len(self._clients)


DIP_CLIENTS = DipClientPool()


def dip_canary(candidate: Certificate) -> CanaryResult:
    """Try ``candidate`` against the DIP for real: a signed, mutually authenticated replay request
    for an empty window. Any refusal (TLS, API key, signature, ownership) fails the canary."""
    connection = candidate.connection
    started_at = timezone.now()
    try:
        with dip_client_for(connection=connection, candidate=candidate) as client:
            response = client.replay(
                CANARY_INTERFACE,
                connection.identity.dip_id,
                datetime_from=CANARY_WINDOW_START,
                datetime_to=CANARY_WINDOW_START + dt.timedelta(seconds=1),
                event="[ActivePower]",
                mpan="",
                version="",
            )
    except DipTransportError as exc:
        record_failure(
            connection=connection,
            operation=ExchangeOperation.CANARY,
            error=exc,
            started_at=started_at,
            interface_id=CANARY_INTERFACE,
        )
        return CanaryResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
    except (CertificateError, ValueError) as exc:
        return CanaryResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
    record_call(
        connection=connection,
        operation=ExchangeOperation.CANARY,
        response=response,
        started_at=started_at,
        interface_id=CANARY_INTERFACE,
    )
    detail = f"{response.status} {response.reason}".strip()
    return CanaryResult(ok=response.ok, detail=f"replay canary: {detail}")


# A rotation request with no canary result after this long is taken as lost (its task never
# ran), so the certificate admin may ask again rather than wait on it forever.
ROTATION_PENDING_WINDOW = dt.timedelta(minutes=15)


def pending_rotation(
    *, certificate: Certificate, now: dt.datetime | None = None
) -> dt.datetime | None:
    """When a rotation of ``certificate`` was asked for and is still waiting for its worker's
    canary, or None. The request is an audit event; the canary's result is on the certificate."""
    if certificate.status != CertificateStatus.STAGED:
        return None
    now = now or timezone.now()
    requested_at = (
        AuditEvent.objects.filter(
            tenant_id=certificate.tenant_id,
            action="certificate.rotation_requested",
            object_type="certificate",
            object_id=str(certificate.id),
            occurred_at__gt=now - ROTATION_PENDING_WINDOW,
        )
        .order_by("-occurred_at")
        .values_list("occurred_at", flat=True)
        .first()
    )
    if requested_at is None:
        return None
    if certificate.last_canary_at is not None and certificate.last_canary_at >= requested_at:
        return None
    return requested_at


def request_certificate_rotation(*, certificate: Certificate, actor: str) -> None:
    """Ask a worker to canary ``certificate`` and cut over to it (the DIP is never called inside a
    web request). Raises CertificateError at once when it cannot be rotated in, or when a rotation
    of it is already waiting for its canary (a second request would only run the canary twice)."""
    from messaging.tasks import rotate_certificate_task  # the tasks module imports this one

    if certificate.status != CertificateStatus.STAGED:
        raise CertificateError(
            f"only a staged certificate can be rotated in; this one is {certificate.status}"
        )
    queued_at = pending_rotation(certificate=certificate)
    if queued_at is not None:
        raise CertificateError(
            f"a rotation of this certificate was requested at {queued_at:%Y-%m-%d %H:%M} UTC"
            " and is waiting for its canary; its result will show here"
        )
    with transaction.atomic():
        record_event(
            action="certificate.rotation_requested",
            actor=actor,
            object_type="certificate",
            object_id=certificate.id,
            detail={"fingerprint_sha256": certificate.fingerprint_sha256},
        )
        rotate_certificate_task.delay_on_commit(
            str(certificate.tenant_id), str(certificate.id), actor
        )


def rotate_certificate(*, certificate_id: str, actor: str) -> Certificate | None:
    """The worker's half: canary and cut over, or record why not. Returns the active certificate,
    or None when the certificate had moved on (already rotated, revoked: nothing to do)."""
    certificate = (
        Certificate.objects.select_related("connection__identity").filter(id=certificate_id).first()
    )
    if certificate is None or certificate.status != CertificateStatus.STAGED:
        return None
    try:
        active = certificates.rotate_certificate(
            certificate=certificate, canary=dip_canary, actor=actor, now=timezone.now()
        )
        DIP_CLIENTS.drop(tenant_id=certificate.tenant_id, connection_id=certificate.connection_id)
        return active
    except CertificateError as exc:
        logger.warning(
            "certificate.rotation_failed",
            extra={"certificate_id": certificate_id, "reason": str(exc)},
        )
        return None


def submit_batch(
    *, connection: Connection, interface_id: str, messages: Sequence[Mapping[str, Any] | bytes]
) -> SubmitResult:
    """Sign and send ``messages`` with the connection's active certificates (through the pooled
    client) and record the exchange, committed on its own. Raises DipTransportError (recorded
    first) when no answer arrived, CertificateError when a certificate is missing."""
    client = DIP_CLIENTS.get(connection=connection)
    started_at = timezone.now()
    try:
        result = client.submit(interface_id, messages)
    except DipTransportError as exc:
        record_failure(
            connection=connection,
            operation=ExchangeOperation.SUBMIT,
            error=exc,
            started_at=started_at,
            interface_id=interface_id,
            sender_references=[r for r in encode_batch(messages)[1] if r],
        )
        raise
    record_submit(connection=connection, result=result, started_at=started_at)
    return result
