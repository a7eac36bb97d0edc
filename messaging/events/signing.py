"""Standard Webhooks signatures (https://www.standardwebhooks.com), written here from the spec.

A secret is ``whsec_`` followed by base64 of random bytes; the signature is
``v1,<base64 HMAC-SHA256(secret bytes, "<webhook-id>.<webhook-timestamp>.<body>")>``. Several
signatures go space-separated in one ``webhook-signature`` header, which is how a rotation's
overlap works: the receiver accepts the request if any one matches its secret.

Busbar's tests and the sample client verify with the ``standardwebhooks`` package, never with this
module, so a mistake here cannot be cancelled out by the same mistake in a verifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SECRET_PREFIX = "whsec_"


class SecretError(ValueError):
    """A signing secret is not ``whsec_<base64>``."""


def generate_secret() -> str:
    """A new signing secret: 32 random bytes (the spec asks for 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def secret_bytes(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError("a signing secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as exc:
        raise SecretError("a signing secret is whsec_ followed by base64") from exc
    if not 24 <= len(key) <= 64:
        raise SecretError("a signing secret holds 24 to 64 bytes")
    return key


def sign(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` for the body under one secret."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    *, secrets: list[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed by every secret given (at least one)."""
    if not secrets:
        raise SecretError("an endpoint needs a signing secret before Busbar can deliver to it")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(secret=s, webhook_id=webhook_id, timestamp=timestamp, body=body) for s in secrets
        ),
    }
