"""Envelope encryption for secrets at rest (private keys, DIP API keys).

Each secret gets its own random data key (DEK); the DEK is wrapped by a key-encryption key (KEK)
that lives outside the database (``BUSBAR_KEKS``, from the environment or a file). The stored token
names the KEK by id, so KEKs can rotate: ``rewrap`` moves a token to the active KEK without ever
exposing the secret. Associated data binds a token to where it belongs (for example the tenant and
the column), so a token copied to another row or tenant fails to decrypt.

Token format (ASCII, safe for a text column):
``v1.<kek id>.<b64 wrapped DEK>.<b64 nonce>.<b64 ciphertext+tag>``
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

VERSION = "v1"


class CryptoError(Exception):
    """A secret could not be encrypted or decrypted; the message says why (never the secret)."""


@dataclass(frozen=True)
class Keyring:
    """The KEKs by id and the id of the one that wraps new secrets."""

    keys: dict[str, bytes]
    active: str

    @classmethod
    def parse(cls, spec: str, active: str = "") -> Keyring:
        """Parse ``"kid:base64key,kid2:base64key"``; the active KEK defaults to the last one."""
        keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            kid, _, material = item.partition(":")
            if not kid or not material or "." in kid:
                raise CryptoError(f"malformed KEK entry {kid or '?'!r}: expected kid:base64key")
            key = base64.b64decode(material)
            if len(key) != 32:
                raise CryptoError(f"KEK {kid!r} must be 32 bytes (AES-256), got {len(key)}")
            keys[kid] = key
        if not keys:
            raise CryptoError("no key-encryption key configured: set BUSBAR_KEKS")
        chosen = active or list(keys)[-1]
        if chosen not in keys:
            raise CryptoError(f"active KEK {chosen!r} is not among the configured KEKs")
        return cls(keys=keys, active=chosen)


def generate_kek() -> str:
    """A new random KEK, base64-encoded, for ``BUSBAR_KEKS``."""
    return base64.b64encode(os.urandom(32)).decode()


def _keyring() -> Keyring:
    # Imported here so the module works without Django (explicit keyrings, offline tools).
    from django.conf import settings

    return Keyring.parse(settings.BUSBAR_KEKS or "", settings.BUSBAR_ACTIVE_KEK or "")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encrypt(plaintext: bytes, *, context: str, keyring: Keyring | None = None) -> str:
    """Encrypt ``plaintext`` under a fresh DEK wrapped by the active KEK, bound to ``context``."""
    ring = keyring or _keyring()
    dek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, context.encode())
    wrapped = aes_key_wrap(ring.keys[ring.active], dek)
    return ".".join([VERSION, ring.active, _b64(wrapped), _b64(nonce), _b64(ciphertext)])


def _split(token: str) -> tuple[str, bytes, bytes, bytes]:
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != VERSION:
        raise CryptoError("not an encrypted secret token (expected v1.<kid>.<dek>.<nonce>.<ct>)")
    return parts[1], _unb64(parts[2]), _unb64(parts[3]), _unb64(parts[4])


def _unwrap(ring: Keyring, kid: str, wrapped: bytes) -> bytes:
    if kid not in ring.keys:
        raise CryptoError(f"secret is wrapped by KEK {kid!r}, which is not configured")
    try:
        return aes_key_unwrap(ring.keys[kid], wrapped)
    except InvalidUnwrap as exc:
        raise CryptoError(f"KEK {kid!r} does not unwrap this secret (wrong key material)") from exc


def decrypt(token: str, *, context: str, keyring: Keyring | None = None) -> bytes:
    """Decrypt a token made by ``encrypt`` with the same ``context``; raises CryptoError."""
    ring = keyring or _keyring()
    kid, wrapped, nonce, ciphertext = _split(token)
    dek = _unwrap(ring, kid, wrapped)
    try:
        return AESGCM(dek).decrypt(nonce, ciphertext, context.encode())
    except InvalidTag as exc:
        raise CryptoError("secret failed authentication: wrong context or tampered token") from exc


def rewrap(token: str, *, keyring: Keyring | None = None) -> str:
    """Re-wrap the token's DEK under the active KEK; the ciphertext is untouched."""
    ring = keyring or _keyring()
    kid, wrapped, nonce, ciphertext = _split(token)
    if kid == ring.active:
        return token
    dek = _unwrap(ring, kid, wrapped)
    rewrapped = aes_key_wrap(ring.keys[ring.active], dek)
    return ".".join([VERSION, ring.active, _b64(rewrapped), _b64(nonce), _b64(ciphertext)])


def kek_id(token: str) -> str:
    """The id of the KEK that wraps ``token``."""
    return _split(token)[0]
