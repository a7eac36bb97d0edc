"""A small signed mTLS client for the DIP API, for tests, benchmarks and manual checks.

It is dipsim's own code (Busbar has its own client): the test suite checks this one against an
independent implementation (the ``openssl`` command line) so the two cannot share a mistake.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dipsim.signing import Signer


def client_context(
    ca_file: str | Path, cert: str | Path | None, key: str | Path | None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


@dataclass
class DipClient:
    """Send signed requests to a DIP (dipsim or otherwise) as one participant or DCP."""

    base_url: str
    api_key: str
    signer: Signer
    ssl_context: ssl.SSLContext
    timeout: float = 30.0

    @classmethod
    def from_files(
        cls,
        base_url: str,
        api_key: str,
        *,
        ca_file: str | Path,
        mtls_prefix: str | Path,
        signing_prefix: str | Path,
    ) -> DipClient:
        """Build a client from ``PREFIX.crt``/``PREFIX.key`` files written by ``ca issue``."""
        signer = Signer.from_files(f"{signing_prefix}.crt", f"{signing_prefix}.key")
        context = client_context(ca_file, f"{mtls_prefix}.crt", f"{mtls_prefix}.key")
        return cls(base_url.rstrip("/"), api_key, signer, context)

    def _http(self) -> httpx.Client:
        return httpx.Client(verify=self.ssl_context, timeout=self.timeout)

    def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> httpx.Response:
        """Send ``body`` (JSON-encoded) or ``raw`` bytes, signed over the exact bytes sent."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        url = self.base_url + path
        headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
        headers.update(self.signer.headers(method, url, data))
        with self._http() as http:
            return http.request(method, url, content=data, headers=headers)

    def send(self, channel: str, payloads: list[dict[str, Any]]) -> httpx.Response:
        return self.request("POST", f"/dip-channel/{channel}", [{"payload": p} for p in payloads])

    def register_webhook(
        self, channel: str, recipient: str, url: str, max_count: int | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"callbackURL": url}
        if max_count is not None:
            body["maxMessageCount"] = max_count
        return self.request("POST", f"/dip-channel/{channel}/pubconfig/{recipient}", body)

    def register_status_webhook(self, recipient: str, url: str) -> httpx.Response:
        return self.request("POST", f"/statusmessage/config/{recipient}", {"callbackURL": url})
