"""Busbar's evidence key: Ed25519, kept outside the database (``BUSBAR_EVIDENCE_KEY``)."""

from __future__ import annotations

import hashlib
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _load(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured("BUSBAR_EVIDENCE_KEY must be an Ed25519 private key (PEM)")
    return key


def signing_key() -> Ed25519PrivateKey:
    pem = settings.BUSBAR_EVIDENCE_KEY
    if not pem:
        raise ImproperlyConfigured(
            "BUSBAR_EVIDENCE_KEY (or BUSBAR_EVIDENCE_KEY_FILE) must hold the evidence key to seal"
            " the ledger and sign evidence packs"
        )
    return _load(pem)


def public_key_pem() -> bytes:
    return (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def key_id() -> str:
    """A short, stable name for the key: the first 16 hex digits of its public key's SHA-256."""
    raw = (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(data: bytes) -> bytes:
    return signing_key().sign(data)
