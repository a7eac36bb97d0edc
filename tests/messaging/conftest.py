"""Fixtures for the DIP protocol boundary: a throwaway PKI built with ``cryptography`` and a real
dipsim process (the other party) started through its command line on ephemeral ports.

Nothing here imports dipsim: it is driven only as a separate program, as the DIP would be.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import selectors
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]

SDS_DIP_ID = "2000000001"  # Busbar's tenant sending IF-021 as a Smart Data Service
SUP_DIP_ID = "1000000001"  # the supplier it sends to
SDS_API_KEY = "sds-api-key-for-tests"
SUP_API_KEY = "sup-api-key-for-tests"


@pytest.fixture(scope="session", autouse=True)
def _runtime_role_guard() -> None:
    """These tests use no database: the suite-wide PostgreSQL role guard does not apply here.

    Overriding it by name keeps them runnable without pytest-django (``-p no:django``).
    """


# ---- a PKI in memory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate with its key, both as objects and PEM."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificate(
    common_name: str,
    *,
    issuer: Issued | None = None,
    ca: bool | None = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """Issue a certificate (self-signed when ``issuer`` is None); ``ca=None`` leaves out the
    basic constraints altogether."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.certificate.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(certificate=certificate, key=key)


@dataclass(frozen=True)
class Pki:
    ca: Issued
    intermediate: Issued
    leaf: Issued
    via_intermediate: Issued
    expired: Issued
    not_yet_valid: Issued
    other_ca: Issued
    rogue: Issued


@pytest.fixture(scope="session")
def pki() -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca = make_certificate("Busbar test CA", ca=True)
    intermediate = make_certificate("Busbar test intermediate", issuer=ca, ca=True)
    other_ca = make_certificate("Another CA", ca=True)
    return Pki(
        ca=ca,
        intermediate=intermediate,
        leaf=make_certificate("signer", issuer=ca),
        via_intermediate=make_certificate("signer via intermediate", issuer=intermediate),
        expired=make_certificate(
            "expired signer",
            issuer=ca,
            not_before=now - dt.timedelta(days=10),
            not_after=now - dt.timedelta(days=1),
        ),
        not_yet_valid=make_certificate(
            "future signer",
            issuer=ca,
            not_before=now + dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=10),
        ),
        other_ca=other_ca,
        rogue=make_certificate("rogue signer", issuer=other_ca),
    )


# ---- dipsim, the other party ---------------------------------------------------------------------


def reference_dir() -> Path | None:
    """The official v2.1.0 spec: ``$DIP_REFERENCE_DIR`` or ``<repo>/../shared/reference``."""
    base = Path(os.environ.get("DIP_REFERENCE_DIR") or REPO_ROOT.parent / "shared" / "reference")
    spec = base / "dip-api-v2.1.0" if (base / "dip-api-v2.1.0").is_dir() else base
    return spec if (spec / "SubmitEvents-unresolved.yaml").is_file() else None


def dipsim_cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "dipsim", *(str(a) for a in args)]


def run_all(commands: list[list[str]]) -> None:
    """Run independent CLI commands in parallel (each is a Python start-up); fail loudly."""
    procs = [
        subprocess.Popen(c, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {out.decode()} {err.decode()}")


@dataclass(frozen=True)
class Credentials:
    """PEM files written by ``dipsim ca issue`` for one DIP ID."""

    mtls_cert: Path
    mtls_key: Path
    sign_cert: Path
    sign_key: Path


@dataclass(frozen=True)
class Dipsim:
    base_url: str
    admin_url: str
    ca_cert: Path
    other_ca_cert: Path
    sds: Credentials
    sup: Credentials
    official_schemas: bool


def _credentials(root: Path, name: str) -> Credentials:
    return Credentials(
        mtls_cert=root / f"{name}-mtls.crt",
        mtls_key=root / f"{name}-mtls.key",
        sign_cert=root / f"{name}-sign.crt",
        sign_key=root / f"{name}-sign.key",
    )


@pytest.fixture(scope="module")
def dipsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dipsim]:
    """A dipsim process on 127.0.0.1 (ephemeral API and admin ports), validating with the
    official schemas when they are available, with two participants registered through its CLI:
    an SDS (the sender) and a supplier (its recipient), each with mTLS and signing certificates
    issued by dipsim's CA."""
    root = tmp_path_factory.mktemp("dipsim")
    ca, other_ca, data = root / "ca", root / "other-ca", root / "data"
    run_all([dipsim_cli("ca", "init", "--dir", ca), dipsim_cli("ca", "init", "--dir", other_ca)])
    commands = [
        dipsim_cli("ca", "issue", "--dir", ca, "--dip-id", dip_id, "--kind", kind, "--out", out)
        for name, dip_id in (("sds", SDS_DIP_ID), ("sup", SUP_DIP_ID))
        for kind, out in (("mtls", root / f"{name}-mtls"), ("signing", root / f"{name}-sign"))
    ]
    run_all(commands)
    # One at a time: both write the same registry database.
    for dip_id, mpid, role, key in (
        (SDS_DIP_ID, "SDSA", "SDS", SDS_API_KEY),
        (SUP_DIP_ID, "ACME", "SUP", SUP_API_KEY),
    ):
        participant = ["--dip-id", dip_id, "--mpid", mpid, "--role", role, "--api-key", key]
        run_all([dipsim_cli("participant", "add", "--data-dir", data, *participant)])
    spec = reference_dir()
    serve = dipsim_cli(
        "serve", "--data-dir", data, "--ca-dir", ca, "--host", "127.0.0.1",
        "--port", "0", "--admin-port", "0", "--env", "UIT",
    )  # fmt: skip
    if spec is not None:
        serve += ["--spec-dir", str(spec)]
    log = (root / "dipsim.log").open("wb")
    proc = subprocess.Popen(serve, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log)
    try:
        line = _ready_line(proc, timeout=30)
        api = re.search(r"api=(\S+)", line)
        admin = re.search(r"admin=(\S+)", line)
        if api is None or admin is None:
            raise RuntimeError(f"unexpected dipsim banner: {line!r}")
        yield Dipsim(
            base_url=api.group(1),
            admin_url=admin.group(1),
            ca_cert=ca / "ca.crt",
            other_ca_cert=other_ca / "ca.crt",
            sds=_credentials(root, "sds"),
            sup=_credentials(root, "sup"),
            official_schemas=spec is not None,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ready_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout)
    while dt.datetime.now(dt.UTC) < deadline:
        remaining = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
        if selector.select(timeout=max(0.0, remaining)):
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            if line.startswith("dipsim ready"):
                return line
    raise RuntimeError(f"dipsim did not start (exit code {proc.poll()})")


@pytest.fixture
def committed_world(committed_db: None) -> object:
    """The two demo tenants, committed: for code that writes on a connection of its own (the
    exchange evidence) and must see the connection rows the test created."""
    from tests.conftest import build_world

    return build_world()
