"""Busbar's HTTP client for the DIP API: signed requests over mutual TLS (DIP.md sections 1, 3, 4).

One :class:`DipClient` serves one connection (a tenant identity, or Busbar as a DCP, in one
environment): its base URL, API key, mTLS certificate, signing certificate and the CA bundle that
vouches for the DIP's server certificate. It pools HTTP/1.1 connections, so a worker keeps one per
connection and reuses it.

Every call answers two questions for the evidence trail: exactly which bytes went out (and their
SHA-256), and which certificates were used (signing and mTLS fingerprints). Keys and the API key
are never logged and never kept in attributes that a ``repr`` would show.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from messaging.dip.codes import (
    Action,
    classify_status,
    message_action,
    parse_code,
    parse_retry_after,
)
from messaging.dip.envelope import check_interface_id, dip_timestamp
from messaging.dip.signing import (
    HEADER_DATE,
    certificate_fingerprint,
    load_private_key,
    sign_request,
)

logger = logging.getLogger("messaging.dip.client")

USER_AGENT = "busbar-dip-client/1"


class DipTransportError(Exception):
    """The request got no HTTP answer (connection refused or dropped, timeout, TLS failure).

    ``retryable`` says whether sending again may succeed (False for a server certificate that the
    configured CA does not vouch for). ``maybe_delivered`` is True when the request may have
    reached the DIP before the failure (a timeout or drop after sending): a resend of the same
    messages may then meet MSG1006, which means "already accepted" rather than "bad".
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        maybe_delivered: bool,
        kind: str,
        url: str,
        body_sha256: str,
        signing_certificate_fingerprint: str,
        mtls_certificate_fingerprint: str,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.maybe_delivered = maybe_delivered
        self.kind = kind
        self.url = url
        self.body_sha256 = body_sha256
        self.signing_certificate_fingerprint = signing_certificate_fingerprint
        self.mtls_certificate_fingerprint = mtls_certificate_fingerprint


@dataclass(frozen=True)
class MessageOutcome:
    """What happened to one message of a submitted batch (``index`` is its position in it)."""

    index: int
    sender_reference: str | None
    action: Action
    transaction_id: str | None = None
    code: str | None = None
    message: str | None = None
    help: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    """The answer to ``POST /dip-channel/{id}``, with everything needed to evidence the send.

    ``body`` is the exact bytes sent and ``body_sha256`` their hex SHA-256. ``action`` and
    ``retryable`` classify the request as a whole; ``outcomes`` say what to do with each message.
    ``resend_individually`` is set when the DIP refused the batch without saying which message
    was bad: resend each one in its own request to isolate it.
    """

    interface_id: str
    url: str
    body: bytes
    body_sha256: str
    status: int
    action: Action
    retryable: bool
    retry_after: float | None
    reason: str
    outcomes: tuple[MessageOutcome, ...]
    signing_certificate_fingerprint: str
    mtls_certificate_fingerprint: str
    signature_date: str
    response_body: bytes
    elapsed_seconds: float
    resend_individually: bool = False

    @property
    def accepted(self) -> bool:
        return self.action is Action.ACCEPTED

    def indexes(self, action: Action) -> list[int]:
        """Positions of the messages whose outcome is ``action``."""
        return [o.index for o in self.outcomes if o.action is action]


@dataclass(frozen=True)
class DipResponse:
    """The answer to any other DIP call (webhook configuration, replay, requeue, status)."""

    method: str
    url: str
    status: int
    action: Action
    retryable: bool
    retry_after: float | None
    reason: str
    body_sha256: str
    response_body: bytes
    signing_certificate_fingerprint: str
    mtls_certificate_fingerprint: str
    data: Any = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.action is Action.ACCEPTED


def build_ssl_context(
    *,
    server_ca_pem: bytes,
    client_certificate_pem: bytes,
    client_private_key_pem: bytes,
    client_key_password: bytes | None = None,
) -> ssl.SSLContext:
    """Return a TLS client context: trust only ``server_ca_pem``; present the mTLS certificate.

    Python's ``ssl`` can load a private key only from a file. Busbar keeps keys encrypted at rest
    and decrypts them only in the worker's memory, so the key is written to a temporary file that
    is (1) created 0600 by ``mkstemp``, (2) on ``/dev/shm`` (RAM, never a disk) when available,
    (3) re-encrypted under a one-time random password that exists only in this process's memory,
    so even a file that survived a crash would be useless, and (4) deleted right after loading.
    Raises ``ValueError`` for an unreadable key and ``ssl.SSLError`` for a key that does not
    belong to the certificate.
    """
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cadata=server_ca_pem.decode("ascii")
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    key = serialization.load_pem_private_key(client_private_key_pem, password=client_key_password)
    one_time = base64.urlsafe_b64encode(secrets.token_bytes(32))
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time),
    )
    shm = "/dev/shm"
    directory = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="busbar-mtls-", suffix=".pem", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(client_certificate_pem.rstrip(b"\n") + b"\n" + encrypted)
        context.load_cert_chain(path, password=one_time)
    finally:
        os.unlink(path)
    return context


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_batch(messages: Sequence[Mapping[str, Any] | bytes]) -> tuple[bytes, list[str | None]]:
    """Return the request body for a batch and each message's sender unique reference.

    Each item is a message ``payload`` (a mapping with CommonBlock/CustomBlock, wrapped here as
    ``{"payload": ...}``), a mapping already of the form ``{"payload": ...}``, or the payload's
    JSON as bytes (kept byte for byte, so stored per-message bytes match what was sent).
    """
    parts: list[bytes] = []
    references: list[str | None] = []
    for item in messages:
        if isinstance(item, bytes | bytearray):
            raw = bytes(item)
            payload = json.loads(raw)
            parts.append(b'{"payload":' + raw + b"}")
        else:
            payload = item["payload"] if set(item) == {"payload"} else item
            parts.append(b'{"payload":' + _json_bytes(payload) + b"}")
        references.append(_sender_reference(payload))
    return b"[" + b",".join(parts) + b"]", references


def _sender_reference(payload: Any) -> str | None:
    try:
        value = payload["CommonBlock"]["S1"]["senderUniqueReference"]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def _entries(data: Any) -> list[dict[str, Any]]:
    array = data.get("messageArray") if isinstance(data, dict) else None
    return [e for e in array if isinstance(e, dict)] if isinstance(array, list) else []


def message_outcomes(
    status: int, data: Any, references: Sequence[str | None]
) -> tuple[list[MessageOutcome], bool]:
    """Map a StandardResponse onto the messages of the batch; return (outcomes, isolate).

    Entries are matched to messages by sender unique reference. In a 201 any unmatched entries
    are paired with unmatched messages in order; a message still without an entry, or with no
    transaction id in it, is accepted without proof (RECONCILE). In a 400 the DIP lists the failing messages: each named one gets
    its code's action and every other message is resent; if a failure names no message of the
    batch (the spec's own example has ``senderUniqueReference: null``) or the 400 carries no
    StandardResponse at all, the culprit is unknown and ``isolate`` asks for one request per
    message (a batch of one is simply rejected).
    """
    entries = _entries(data)
    positions: dict[str, int] = {ref: i for i, ref in enumerate(references) if ref}
    matched: dict[int, dict[str, Any]] = {}
    unmatched: list[dict[str, Any]] = []
    for entry in entries:
        index = positions.get(entry.get("senderUniqueReference") or "")
        if index is not None and index not in matched:
            matched[index] = entry
        else:
            unmatched.append(entry)
    success = 200 <= status < 300
    isolate = False
    if success:
        missing = [i for i in range(len(references)) if i not in matched]
        for index, entry in zip(missing, unmatched, strict=False):
            matched[index] = entry
    else:
        failing = [e for e in unmatched if parse_code(e.get("message")) != "MSG0000"]
        if not entries:
            # A refusal without a StandardResponse (a proxy, a malformed answer): the culprit
            # is unknown too; an empty entry stands for it so a lone message is rejected.
            failing = [{}]
        if failing and len(references) == 1 and 0 not in matched:
            matched[0] = failing[0]
        elif failing:
            isolate = True

    outcomes = []
    for index, reference in enumerate(references):
        found = matched.get(index)
        if found is None:
            action = Action.RECONCILE if success else Action.RESEND
            outcomes.append(MessageOutcome(index=index, sender_reference=reference, action=action))
            continue
        code = parse_code(found.get("message"))
        transaction = found.get("transactionID")
        if success and code in (None, "MSG0000"):
            # Accepted; without a transaction id Busbar cannot prove it, so it reconciles.
            action = Action.ACCEPTED if isinstance(transaction, str) else Action.RECONCILE
        elif code == "MSG0000":
            action = Action.RESEND
        else:
            action = message_action(code)
        outcomes.append(
            MessageOutcome(
                index=index,
                sender_reference=reference,
                action=action,
                transaction_id=transaction if isinstance(transaction, str) and success else None,
                code=code,
                message=found.get("message"),
                help=found.get("help"),
            )
        )
    return outcomes, isolate


class MessageCriteria(TypedDict, total=False):
    """What a replay or requeue asks for (MessageRequest); any left out is sent as null."""

    datetime_from: dt.datetime | None
    datetime_to: dt.datetime | None
    event: str | None
    mpan: str | None
    version: str | None
    transaction_ids: Sequence[str] | None


def _message_request(
    *,
    datetime_from: dt.datetime | None = None,
    datetime_to: dt.datetime | None = None,
    event: str | None = None,
    mpan: str | None = None,
    version: str | None = None,
    transaction_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    # The five filters are required keys with nullable values (MessageRequest, v2.1.0).
    body: dict[str, Any] = {
        "datetimeFrom": dip_timestamp(datetime_from) if datetime_from else None,
        "datetimeTo": dip_timestamp(datetime_to) if datetime_to else None,
        "eventCode": (event if event.startswith("[") else f"[{event}]") if event else None,
        "MPAN": mpan,
        "version": version,
    }
    if transaction_ids is not None:
        if not 1 <= len(transaction_ids) <= 100:
            raise ValueError("transaction_ids holds 1 to 100 transaction ids")
        body["transactionIDs"] = list(transaction_ids)
    return body


def _webhook_config(
    callback_url: str, max_message_count: int | None, max_payload_kb: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"callbackURL": callback_url}
    if max_message_count is not None:
        body["maxMessageCount"] = max_message_count
    if max_payload_kb is not None:
        body["maxPayloadSize"] = max_payload_kb
    return body


def _tls_verification_failure(err: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        current = current.__cause__ or current.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(err)


def _segment(value: str) -> str:
    return quote(value, safe="")


class DipClient:
    """A signed, mutually authenticated client for one DIP connection. Thread-safe (httpx).

    All PEM material arrives as bytes; nothing is read from or left on disk (see
    :func:`build_ssl_context`). Use as a context manager or call :meth:`close`. The constructor
    raises ``ValueError`` (or ``ssl.SSLError``) when a key does not belong to its certificate.
    Every method raises :class:`DipTransportError` when no HTTP answer arrives.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        mtls_certificate_pem: bytes,
        mtls_private_key_pem: bytes,
        signing_certificate_pem: bytes,
        signing_private_key_pem: bytes,
        server_ca_pem: bytes,
        key_password: bytes | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_connections: int = 10,
        proxy: str | None = None,
    ) -> None:
        if not base_url.lower().startswith("https://"):
            raise ValueError("the DIP is reached over HTTPS (mutual TLS) only")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._signing_key = load_private_key(signing_private_key_pem, key_password)
        self._signing_certificate_pem = signing_certificate_pem
        signing_certificate = x509.load_pem_x509_certificate(signing_certificate_pem)
        if signing_certificate.public_key() != self._signing_key.public_key():
            # Caught here, not as a 401 on every message once the worker starts sending.
            raise ValueError("the signing key does not belong to the signing certificate")
        self.signing_certificate_fingerprint = certificate_fingerprint(signing_certificate)
        self.mtls_certificate_fingerprint = certificate_fingerprint(
            x509.load_pem_x509_certificate(mtls_certificate_pem)
        )
        context = build_ssl_context(
            server_ca_pem=server_ca_pem,
            client_certificate_pem=mtls_certificate_pem,
            client_private_key_pem=mtls_private_key_pem,
            client_key_password=key_password,
        )
        self._http = httpx.Client(
            verify=context,
            http1=True,
            http2=False,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            proxy=proxy,
            # Proxies come from settings, not from whatever the worker's environment holds.
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"DipClient({self.base_url!r}, signing={self.signing_certificate_fingerprint[:16]})"

    def __enter__(self) -> DipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- transport ------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes) -> tuple[httpx.Response, str, str, float]:
        """Sign and send; return (response, wire URL, signature date, seconds)."""
        headers = {"X-API-Key": self._api_key}
        if body:
            headers["Content-Type"] = "application/json"
        request = self._http.build_request(
            method, self.base_url + path, content=body, headers=headers
        )
        # Sign the URL exactly as httpx will put it on the wire (after its normalisation).
        url = str(request.url)
        signed = sign_request(
            method=method,
            url=url,
            body=body,
            private_key=self._signing_key,
            certificate_pem=self._signing_certificate_pem,
        )
        request.headers.update(signed)
        started = time.monotonic()
        try:
            response = self._http.send(request)
        except httpx.TransportError as err:
            raise self._transport_error(err, url, body) from err
        return response, url, signed[HEADER_DATE], time.monotonic() - started

    def _transport_error(
        self, err: httpx.TransportError, url: str, body: bytes
    ) -> DipTransportError:
        if isinstance(err, httpx.ConnectError) and _tls_verification_failure(err):
            kind, retryable, maybe = "tls_untrusted_server", False, False
        elif isinstance(err, httpx.ConnectTimeout | httpx.PoolTimeout):
            kind, retryable, maybe = "connect_timeout", True, False
        elif isinstance(err, httpx.ConnectError):
            kind, retryable, maybe = "connect", True, False
        elif isinstance(err, httpx.TimeoutException):
            kind, retryable, maybe = "timeout", True, True
        elif isinstance(err, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            kind, retryable, maybe = "connection_dropped", True, True
        else:
            kind, retryable, maybe = "transport", True, True
        error = DipTransportError(
            f"{kind}: {type(err).__name__}: {err}",
            retryable=retryable,
            maybe_delivered=maybe,
            kind=kind,
            url=url,
            body_sha256=hashlib.sha256(body).hexdigest(),
            signing_certificate_fingerprint=self.signing_certificate_fingerprint,
            mtls_certificate_fingerprint=self.mtls_certificate_fingerprint,
        )
        logger.warning(
            "dip.transport_error",
            extra={"url": url, "kind": kind, "retryable": retryable, "maybe_delivered": maybe},
        )
        return error

    def _call(self, method: str, path: str, body: Any = None) -> DipResponse:
        raw = _json_bytes(body) if body is not None else b""
        response, url, _date, elapsed = self._send(method, path, raw)
        klass = classify_status(response.status_code)
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        logger.info(
            "dip.call",
            extra={
                "method": method,
                "url": url,
                "status": response.status_code,
                "elapsed_ms": round(elapsed * 1000, 1),
            },
        )
        return DipResponse(
            method=method,
            url=url,
            status=response.status_code,
            action=klass.action,
            retryable=klass.retryable,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            reason=klass.reason,
            body_sha256=hashlib.sha256(raw).hexdigest(),
            response_body=response.content,
            signing_certificate_fingerprint=self.signing_certificate_fingerprint,
            mtls_certificate_fingerprint=self.mtls_certificate_fingerprint,
            data=data,
        )

    # ---- the DIP API ----------------------------------------------------------------------------

    def submit(
        self, interface_id: str, messages: Sequence[Mapping[str, Any] | bytes]
    ) -> SubmitResult:
        """Send a batch on channel ``interface_id``; return the per-message outcomes.

        ``messages`` are payloads (see :func:`encode_batch`). Raises ``ValueError`` for an empty
        batch and :class:`DipTransportError` when no answer arrives.
        """
        if not messages:
            raise ValueError("a batch holds at least one message")
        interface_id = check_interface_id(interface_id)
        body, references = encode_batch(messages)
        response, url, date, elapsed = self._send(
            "POST", f"/dip-channel/{_segment(interface_id)}", body
        )
        status = response.status_code
        klass = classify_status(status)
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        isolate = False
        if 200 <= status < 300 or status == 400:
            outcomes, isolate = message_outcomes(status, data, references)
        else:
            outcomes = [
                MessageOutcome(index=i, sender_reference=ref, action=klass.action)
                for i, ref in enumerate(references)
            ]
        result = SubmitResult(
            interface_id=interface_id,
            url=url,
            body=body,
            body_sha256=hashlib.sha256(body).hexdigest(),
            status=status,
            action=klass.action,
            retryable=klass.retryable,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            reason=klass.reason,
            outcomes=tuple(outcomes),
            signing_certificate_fingerprint=self.signing_certificate_fingerprint,
            mtls_certificate_fingerprint=self.mtls_certificate_fingerprint,
            signature_date=date,
            response_body=response.content,
            elapsed_seconds=elapsed,
            resend_individually=isolate,
        )
        logger.info(
            "dip.submit",
            extra={
                "interface_id": interface_id,
                "status": status,
                "messages": len(references),
                "body_sha256": result.body_sha256,
                "signing_fingerprint": self.signing_certificate_fingerprint,
                "elapsed_ms": round(elapsed * 1000, 1),
            },
        )
        return result

    def register_webhook(
        self,
        interface_id: str,
        recipient_dip_id: str,
        callback_url: str,
        max_message_count: int | None = None,
        max_payload_kb: int | None = None,
    ) -> DipResponse:
        """Register the webhook on which the DIP pushes ``interface_id`` to ``recipient_dip_id``
        (201). The two limits are optional and, per Elexon, unused by the DIP."""
        path = f"/dip-channel/{_segment(check_interface_id(interface_id))}/pubconfig/{_segment(recipient_dip_id)}"
        return self._call(
            "POST", path, _webhook_config(callback_url, max_message_count, max_payload_kb)
        )

    def delete_webhook(self, interface_id: str, recipient_dip_id: str) -> DipResponse:
        """Delete the webhook of ``interface_id`` for ``recipient_dip_id`` (204)."""
        path = f"/dip-channel/{_segment(check_interface_id(interface_id))}/pubconfig/{_segment(recipient_dip_id)}"
        return self._call("DELETE", path)

    def register_status_webhook(
        self,
        recipient_dip_id: str,
        callback_url: str,
        max_message_count: int | None = None,
        max_payload_kb: int | None = None,
    ) -> DipResponse:
        """Register the webhook on which the DIP pushes status messages for ``recipient_dip_id``."""
        return self._call(
            "POST",
            f"/statusmessage/config/{_segment(recipient_dip_id)}",
            _webhook_config(callback_url, max_message_count, max_payload_kb),
        )

    def delete_status_webhook(self, recipient_dip_id: str) -> DipResponse:
        """Delete the status-message webhook of ``recipient_dip_id`` (204)."""
        return self._call("DELETE", f"/statusmessage/config/{_segment(recipient_dip_id)}")

    def replay(
        self, interface_id: str, recipient_dip_id: str, **criteria: Unpack[MessageCriteria]
    ) -> DipResponse:
        """Fetch past publications synchronously; on 200 ``data`` is the egress message array."""
        return self._past_publications("replay", interface_id, recipient_dip_id, criteria)

    def requeue(
        self, interface_id: str, recipient_dip_id: str, **criteria: Unpack[MessageCriteria]
    ) -> DipResponse:
        """Ask the DIP to push past publications to the registered webhook again (200)."""
        return self._past_publications("requeue", interface_id, recipient_dip_id, criteria)

    def _past_publications(
        self, verb: str, interface_id: str, recipient_dip_id: str, criteria: MessageCriteria
    ) -> DipResponse:
        """``POST /dip-channel/{id}/{replay|requeue}/{recipient}`` with a MessageRequest."""
        channel = _segment(check_interface_id(interface_id))
        path = f"/dip-channel/{channel}/{verb}/{_segment(recipient_dip_id)}"
        return self._call("POST", path, _message_request(**criteria))

    def send_status(self, entries: Sequence[Mapping[str, Any]]) -> DipResponse:
        """Send status messages (``envelope.status_entry``) to the DIP (201 with a
        StandardResponse in ``data``)."""
        if not entries:
            raise ValueError("send at least one status entry")
        return self._call("POST", "/statusmessage", list(entries))
