"""Fixtures for dipsim's tests: a test PKI, running dipsim instances on real sockets, and an mTLS
webhook receiver that records what dipsim pushes. No Django, no database server.

dipsim runs in a background event-loop thread (one per test session); tests drive it over real
HTTPS/mTLS with real signatures.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dipsim import pki
from dipsim.client import DipClient
from dipsim.config import Settings
from dipsim.server import Service
from dipsim.signing import SignatureError, SignatureVerifier
from dipsim.store import Store
from dipsim.traffic import setup_simulated
from dipsim.validation import Validators
from tests.spec import spec_missing
from tests.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
ACME, GLOBEX, DCP, SDS_TENANT = "1000000001", "1000000002", "9000000001", "3000000099"


def reference_dir() -> Path | None:
    """The official spec folder: ``$DIP_REFERENCE_DIR`` or ``<repo>/../shared/reference``."""
    base = Path(os.environ.get("DIP_REFERENCE_DIR") or REPO_ROOT.parent / "shared" / "reference")
    spec = base / "dip-api-v2.1.0" if (base / "dip-api-v2.1.0").is_dir() else base
    return spec if (spec / "Interfaces-EventCodes-unresolved.yaml").is_file() else None


class LoopThread:
    """An asyncio loop in a daemon thread; :meth:`run` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, func: Callable[[], Any], timeout: float = 60) -> Any:
        async def wrapper() -> Any:
            return func()

        return self.run(wrapper(), timeout)


@pytest.fixture(scope="session", autouse=True)
def _runtime_role_guard() -> None:
    """dipsim's tests use no database: the suite-wide PostgreSQL role guard does not apply here.

    Overriding it by name keeps these tests runnable without pytest-django (``-p no:django``).
    """


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.loop.call_soon_threadsafe(thread.loop.stop)


@dataclass
class Pki:
    """The CA folder and participant credentials (PEM files under one tmp folder)."""

    root: Path
    ca: pki.CaPaths

    def prefix(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = pki.init_ca(root / "ca")
    for name, dip_id in (("acme", ACME), ("globex", GLOBEX), ("dcp", DCP), ("sds", SDS_TENANT)):
        pki.issue_to_files(
            ca.root,
            dip_ids=[dip_id],
            kind="mtls",
            out=root / f"{name}-mtls",
            sans=["127.0.0.1", "localhost"],
        )
        pki.issue_to_files(ca.root, dip_ids=[dip_id], kind="signing", out=root / f"{name}-sign")
    pki.issue_to_files(
        ca.root, dip_ids=[ACME], kind="mtls", out=root / "acme-expired-mtls", expired=True, days=2
    )
    pki.issue_to_files(
        ca.root,
        dip_ids=[ACME],
        kind="signing",
        out=root / "acme-expired-sign",
        expired=True,
        days=2,
    )
    other = pki.init_ca(root / "other-ca")
    pki.issue_to_files(other.root, dip_ids=[ACME], kind="mtls", out=root / "rogue-mtls")
    pki.issue_to_files(other.root, dip_ids=[ACME], kind="signing", out=root / "rogue-sign")
    # A webhook server certificate for the test receivers, from dipsim's CA.
    pki.issue_to_files(
        ca.root,
        dip_ids=[ACME],
        kind="server",
        out=root / "webhook",
        sans=["127.0.0.1", "localhost"],
    )
    return Pki(root=root, ca=ca)


@pytest.fixture(scope="session")
def official_validators(reference_validators: Validators | None) -> Validators:
    if reference_validators is None:
        spec_missing("dipsim's validation against the official schemas")
    return reference_validators


@pytest.fixture(scope="session")
def reference_validators() -> Validators | None:
    """The official spec's validators when the reference is present, else None (no skip)."""
    spec = reference_dir()
    return Validators(spec) if spec is not None else None


@pytest.fixture(scope="session")
def builtin_validators() -> Validators:
    return Validators(None)


@dataclass
class Running:
    """A running dipsim with handy clients."""

    service: Service
    pki: Pki
    loop: LoopThread

    @property
    def base_url(self) -> str:
        return self.service.base_url

    @property
    def admin_url(self) -> str:
        return self.service.admin_url

    @property
    def sim(self) -> Any:
        return self.service.sim

    def client(
        self,
        name: str = "acme",
        api_key: str = "key-acme",
        *,
        mtls: str | None = None,
        sign: str | None = None,
    ) -> DipClient:
        return DipClient.from_files(
            self.base_url,
            api_key,
            ca_file=self.pki.ca.ca_cert,
            mtls_prefix=self.pki.prefix(mtls or f"{name}-mtls"),
            signing_prefix=self.pki.prefix(sign or f"{name}-sign"),
        )

    def wait(
        self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
    ) -> Any:
        return wait_for(predicate, timeout, what=what)

    def pusher_holds(self) -> bool:
        """True while the pusher holds a lone message back for an ``out_of_order`` fault."""
        return bool(self.loop.call(lambda: dict(self.service.pusher._held)))

    def deliveries(self, state: str | None = None) -> list[Any]:
        return self.loop.call(
            lambda: [dict(r) for r in self.sim.store.list_deliveries(state=state, limit=10_000)]
        )


def register_demo(store: Store) -> None:
    """ACME (a supplier), GLOBEX (another supplier, behind the DCP), a DCP and an SDS tenant."""
    store.upsert_participant(dip_id=DCP, mpid="BUSB", role="DCP", api_key="key-dcp", kind="dcp")
    store.upsert_participant(dip_id=ACME, mpid="ACME", role="SUP", api_key="key-acme")
    store.upsert_participant(
        dip_id=GLOBEX, mpid="GLBX", role="SUP", api_key="key-globex", dcp_id=DCP
    )
    store.upsert_participant(dip_id=SDS_TENANT, mpid="SDST", role="SDS", api_key="key-sds")
    setup_simulated(store)


@pytest.fixture
def start_dipsim(
    tmp_path: Path, test_pki: Pki, loop_thread: LoopThread, builtin_validators: Validators
) -> Iterator[Callable[..., Running]]:
    """Factory: start a dipsim on ephemeral ports with the demo registry; stopped after the test."""
    started: list[Running] = []

    def start(
        *, validators: Validators | None = None, data_dir: Path | None = None, **overrides: Any
    ) -> Running:
        options: dict[str, Any] = {
            "port": 0,
            "admin_port": 0,
            "retry_base_seconds": 0.05,
            "retry_factor": 2.0,
            "retry_max_delay_seconds": 0.5,
            "max_attempts": 4,
            "push_timeout_seconds": 5.0,
        }
        options.update(overrides)
        settings = Settings(
            data_dir=data_dir or tmp_path / "dipsim-data", ca_dir=test_pki.ca.root, **options
        )
        service = Service(settings, validators=validators or builtin_validators)
        loop_thread.call(lambda: register_demo(service.sim.store))
        loop_thread.run(service.start())
        running = Running(service=service, pki=test_pki, loop=loop_thread)
        started.append(running)
        return running

    yield start
    for running in started:
        loop_thread.run(running.service.stop())


@dataclass
class Receiver:
    """An HTTPS webhook server requiring client certificates; records every request it gets."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    verify: bool = False
    runner: web.AppRunner | None = None
    at_once: int = 0  # requests being answered now
    most_at_once: int = 0  # the most answered at once so far

    def bodies(self) -> list[Any]:
        return [json.loads(r["body"]) for r in self.requests if r["status"] < 300]

    def messages(self) -> list[dict[str, Any]]:
        return [item for body in self.bodies() for item in body]


@pytest.fixture
def receiver(loop_thread: LoopThread, test_pki: Pki) -> Iterator[Callable[..., Receiver]]:
    """Factory: start a webhook receiver. ``statuses`` are answered in order, then 201."""
    runners: list[web.AppRunner] = []
    verifier = SignatureVerifier([pki.load_cert(test_pki.ca.ca_cert)], skew_seconds=300)

    def start(
        statuses: list[int] | None = None,
        *,
        verify: bool = False,
        delay: float = 0.0,
        tls: bool = True,
    ) -> Receiver:
        rec = Receiver(url="", statuses=list(statuses or []), verify=verify)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            rec.at_once += 1
            rec.most_at_once = max(rec.most_at_once, rec.at_once)
            try:
                if delay:
                    await asyncio.sleep(delay)
            finally:
                rec.at_once -= 1
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            status = rec.statuses.pop(0) if rec.statuses else 201
            if rec.verify:
                try:
                    verifier.verify(
                        request.headers,
                        "POST",
                        f"{request.scheme}://{request.host}{request.raw_path}",
                        body,
                    )
                except SignatureError:
                    status = 401
            items: Any = None
            if status == 201:
                try:
                    items = json.loads(body)
                except ValueError:
                    status = 400
            rec.requests.append(
                {
                    "headers": dict(request.headers),
                    "body": body,
                    "status": status,
                    "peer": peer,
                    "url": str(request.url),
                }
            )
            if status == 201:
                reply = {"messageArray": [{"message": "RCP0000 - Message Success"} for _ in items]}
                return web.json_response(reply, status=201)
            return web.Response(status=status, text="scripted answer")

        async def boot() -> str:
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            context: ssl.SSLContext | None = None
            if tls:
                context = ssl.create_default_context(
                    ssl.Purpose.CLIENT_AUTH, cafile=str(test_pki.ca.ca_cert)
                )
                context.load_cert_chain(
                    str(test_pki.prefix("webhook.crt")), str(test_pki.prefix("webhook.key"))
                )
                context.verify_mode = ssl.CERT_REQUIRED
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            runners.append(runner)
            rec.runner = runner
            scheme = "https" if tls else "http"
            return f"{scheme}://127.0.0.1:{runner.addresses[0][1]}/dip/inbound"

        rec.url = loop_thread.run(boot())
        return rec

    yield start
    for runner in runners:
        loop_thread.run(runner.cleanup())


StartDipsim = Callable[..., Running]
StartReceiver = Callable[..., Receiver]
