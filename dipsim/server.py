"""The DIP's HTTPS API (mutual TLS) and dipsim's admin API, on aiohttp.

Ingress order, as DIP.md section 13 lays it out: mTLS (the TLS layer refuses clients without a
certificate from the test CA) -> ``X-API-Key`` (401) -> the four signature headers (401) ->
certificate identity against the key's DIP ID or its DCP (403) -> the request itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dipsim.admin import build_admin
from dipsim.config import Settings
from dipsim.counterparties import Counterparties
from dipsim.engine import CHANNELS, STATUS_CHANNEL, Outcome, Simulator, mark_replayed
from dipsim.pki import CaPaths, load_cert, peercert_dip_ids
from dipsim.push import Pusher
from dipsim.signing import SignatureError, SignatureVerifier
from dipsim.store import Participant
from dipsim.validation import Validators

logger = logging.getLogger("dipsim.server")

SIM_KEY: web.AppKey[Simulator] = web.AppKey("sim", Simulator)
VERIFIER_KEY: web.AppKey[SignatureVerifier] = web.AppKey("verifier", SignatureVerifier)


class Refusal(Exception):
    """A request refused before it reaches the DIP's logic (401, 403, 404...)."""

    def __init__(
        self, status: int, reason: str, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.body = body
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, at least 1) on a 429 or 503 that knows when to come back."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def server_ssl_context(ca_paths: CaPaths) -> ssl.SSLContext:
    """TLS context for the DIP API: dipsim's server certificate, client certificates required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_paths.ca_cert))
    cert, key = ca_paths.pair("server")
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _json(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def _outcome(outcome: Outcome) -> web.Response:
    return _json(outcome.status, outcome.body)


def _channel(request: web.Request) -> str:
    channel = request.match_info["id"].upper()
    if channel not in CHANNELS:
        raise Refusal(404, f"no channel {request.match_info['id']}")
    return channel


def _url(request: web.Request, settings: Settings) -> str:
    base = settings.public_base_url or f"{request.scheme}://{request.host}"
    return base.rstrip("/") + request.raw_path


async def _authenticate(
    request: web.Request, body: bytes, *, signature: str = "required"
) -> Participant:
    """Return the participant whose API key was used, after the certificate and signature checks.

    ``signature`` is ``required`` or ``optional`` (checked only when headers are present; used by
    the debug-only ``/validate`` endpoints, whose specification lists no signature headers).
    """
    sim = request.app[SIM_KEY]
    registry = sim.registry()
    api_key = request.headers.get("X-API-Key")
    caller = registry.by_api_key.get(api_key) if api_key else None
    if caller is None:
        raise Refusal(401, "missing or unknown X-API-Key")
    allowed = {caller.dip_id} | ({caller.dcp_id} if caller.dcp_id else set())
    peer_ids = peercert_dip_ids(
        request.transport.get_extra_info("peercert") if request.transport else None
    )
    if not peer_ids & allowed:
        raise Refusal(
            403, f"the TLS client certificate does not belong to {caller.dip_id} or its DCP"
        )
    if signature == "optional" and not request.headers.get("X-DIP-Signature"):
        return caller
    verifier = request.app[VERIFIER_KEY]
    try:
        verified = verifier.verify(
            request.headers, request.method, _url(request, sim.settings), body
        )
    except SignatureError as err:
        sim.count("ingress.bad_signature")
        raise Refusal(401, f"signature: {err}") from err
    if not verified.dip_ids & allowed:
        raise Refusal(403, f"the signing certificate does not belong to {caller.dip_id} or its DCP")
    return caller


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    sim.count("ingress.requests")
    try:
        response = await handler(request)
    except Refusal as refusal:
        sim.count(f"ingress.http_{refusal.status}")
        sim.store.log_event(
            "refused", {"path": request.path, "status": refusal.status, "reason": refusal.reason}
        )
        if refusal.body is not None:
            response = _json(refusal.status, refusal.body)
            response.headers.update(refusal.headers())
            return response
        return web.Response(status=refusal.status, text=refusal.reason, headers=refusal.headers())
    except web.HTTPException as err:
        sim.count(f"ingress.http_{err.status}")
        raise
    sim.count(f"ingress.http_{response.status}")
    return response


async def _ingress_faults(request: web.Request, channel: str | None) -> Any:
    """Apply ingress faults that act before processing; return the ones that act after it."""
    sim = request.app[SIM_KEY]
    if sim.faults.outage():
        raise Refusal(503, "DIP outage (fault injection)", retry_after=sim.faults.outage_left())
    api_key = request.headers.get("X-API-Key")
    caller = sim.registry().by_api_key.get(api_key) if api_key else None
    faults = sim.faults.pick("ingress", channel, caller.dip_id if caller else None)
    after = []
    for fault in faults:
        sim.count(f"fault.ingress.{fault.kind}")
        if fault.kind == "latency":
            await asyncio.sleep(float(fault.params.get("ms", 1000)) / 1000)
        elif fault.kind == "error":
            status = int(fault.params.get("status", 500))
            retry_after = fault.params.get("retry_after")
            if retry_after is None and status in (429, 503):
                retry_after = sim.settings.retry_after_seconds
            raise Refusal(
                status,
                "injected error",
                retry_after=float(retry_after) if retry_after is not None else None,
            )
        elif fault.kind == "too_large":
            raise Refusal(413, "Payload Too Large (fault injection)")
        elif fault.kind == "rate_limit":
            raise Refusal(
                429,
                "Too Many Requests (fault injection)",
                retry_after=float(
                    fault.params.get("retry_after", sim.settings.retry_after_seconds)
                ),
            )
        elif fault.kind == "timeout":
            await asyncio.sleep(float(fault.params.get("seconds", 60)))
            _drop(request)
            raise Refusal(504, "timeout (fault injection)")
        else:
            after.append(fault)
    return after


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


class RateLimiter:
    """A token bucket per API key, counted in requests per second."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        # Replaceable, so a test can refill the bucket by moving a clock rather than by sleeping.
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        return self.wait_for(key) == 0.0

    def wait_for(self, key: str) -> float:
        """Take a token for ``key`` and return 0.0, or return the seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self.buckets.get(key, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if tokens < 1:
            self.buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self.buckets[key] = (tokens - 1, now)
        return 0.0


LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("limiter", RateLimiter)


async def _body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as err:
        raise Refusal(413, "Payload Too Large") from err


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


async def send_messages(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    channel = _channel(request)
    after = await _ingress_faults(request, channel)
    body = await _body(request)
    caller = await _authenticate(request, body)
    wait = request.app[LIMITER_KEY].wait_for(caller.dip_id)
    if wait:
        raise Refusal(429, "Too Many Requests", retry_after=wait)
    items = _parse(body)
    if isinstance(items, list) and len(items) > sim.settings.max_batch_messages:
        raise Refusal(413, f"more than {sim.settings.max_batch_messages} messages in one request")
    outcome = (
        sim.ingest(channel, items, caller)
        if items is not None
        else sim.request_failure("MSG1001", "the body is not JSON")
    )
    if outcome.status != 201:
        sim.store.log_event(
            "rejected", {"channel": channel, "caller": caller.dip_id, "response": outcome.body}
        )
    if any(fault.kind == "drop_after_accept" for fault in after):
        # The "did it arrive?" case: the batch is stored and will be pushed, but the sender
        # never hears so; resending it must hit MSG1006 (duplicate sender reference).
        _drop(request)
        raise Refusal(502, "connection dropped after accepting (fault injection)")
    return _outcome(outcome)


def _webhook_config(body: bytes, settings: Settings) -> tuple[str, int | None, int | None]:
    data = _parse(body)
    if not isinstance(data, dict):
        raise Refusal(400, "the body is a WebhookConfig object")
    lower = {k.lower(): v for k, v in data.items()}
    url = lower.get("callbackurl")
    schemes = ("https://", "http://") if settings.allow_http_webhooks else ("https://",)
    if not isinstance(url, str) or not url.lower().startswith(schemes) or len(url) > 2000:
        raise Refusal(
            400, f"callbackURL must be an absolute {' or '.join(s[:-3] for s in schemes)} URL"
        )
    numbers = []
    for name in ("maxmessagecount", "maxpayloadsize"):
        value = lower.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 1
        ):
            raise Refusal(400, f"{name} must be a positive number")
        numbers.append(int(value) if value is not None else None)
    return url, numbers[0], numbers[1]


async def pubconfig(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    channel = _channel(request)
    await _ingress_faults(request, channel)
    body = await _body(request)
    caller = await _authenticate(request, body)
    recipient = request.match_info["recipient"]
    if not sim.may_act_for(caller, recipient, sim.registry()):
        raise Refusal(403, f"the credentials used may not configure {recipient}")
    if request.method == "DELETE":
        sim.store.delete_webhook(channel, recipient)
        return web.Response(status=204)
    url, max_count, max_kb = _webhook_config(body, sim.settings)
    woken = sim.store.set_webhook(channel, recipient, url, max_count, max_kb)
    sim.pending_targets.add((recipient, channel))
    sim.store.log_event(
        "pubconfig", {"channel": channel, "recipient": recipient, "url": url, "woken": woken}
    )
    sim.wake.set()
    return web.Response(status=201)


async def status_config(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    await _ingress_faults(request, None)
    body = await _body(request)
    caller = await _authenticate(request, body)
    recipient = request.match_info["recipient"]
    if not sim.may_act_for(caller, recipient, sim.registry()):
        raise Refusal(403, f"the credentials used may not configure {recipient}")
    if request.method == "DELETE":
        sim.store.delete_webhook(STATUS_CHANNEL, recipient)
        return web.Response(status=204)
    url, max_count, max_kb = _webhook_config(body, sim.settings)
    sim.store.set_webhook(STATUS_CHANNEL, recipient, url, max_count, max_kb)
    sim.pending_targets.add((recipient, STATUS_CHANNEL))
    sim.wake.set()
    return web.Response(status=201)


async def status_message(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    await _ingress_faults(request, None)
    body = await _body(request)
    caller = await _authenticate(request, body)
    items = _parse(body)
    outcome = (
        sim.submit_status(items, caller)
        if items is not None
        else sim.request_failure("MSG1001", "not JSON")
    )
    return _outcome(outcome)


async def _replay_rows(request: web.Request) -> tuple[Simulator, str, str, list[Any]]:
    sim = request.app[SIM_KEY]
    channel = _channel(request)
    await _ingress_faults(request, channel)
    body = await _body(request)
    caller = await _authenticate(request, body)
    recipient = request.match_info["recipient"]
    if not sim.may_act_for(caller, recipient, sim.registry()):
        raise Refusal(403, f"the credentials used may not replay for {recipient}")
    try:
        rows = sim.select_for_replay(channel, recipient, _parse(body))
    except ValueError as err:
        raise Refusal(400, str(err), sim.request_failure("MSG1001", str(err)).body) from err
    return sim, channel, recipient, rows


async def replay(request: web.Request) -> web.StreamResponse:
    sim, _channel_id, _recipient, rows = await _replay_rows(request)
    bodies = sim.store.message_bodies([row["seq"] for row in rows])
    parts = [
        b'{"payload":' + mark_replayed(bodies[row["seq"]]) + b"}"
        for row in rows
        if row["seq"] in bodies
    ]
    sim.count("replay.messages", len(parts))
    return web.Response(
        status=200, body=b"[" + b",".join(parts) + b"]", content_type="application/json"
    )


async def requeue(request: web.Request) -> web.StreamResponse:
    sim, channel, recipient, rows = await _replay_rows(request)
    count = sim.requeue(channel, recipient, rows)
    return _json(200, {"requeued": count})


async def validate(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    channel = _channel(request)
    event = request.match_info["event"]
    event_code = event if event.startswith("[") else f"[{event}]"
    if not sim.validators.knows(channel, event_code):
        raise Refusal(404, f"no validation endpoint for {channel}/{event}")
    body = await _body(request)
    await _authenticate(request, body, signature="optional")
    items = _parse(body)
    if not isinstance(items, list) or not items:
        return _json(400, "the body is a non-empty array of {payload} objects")
    for index, item in enumerate(items):
        payload = item.get("payload") if isinstance(item, dict) else None
        failure = sim.validators.validate_variant(channel, event_code, payload)
        if failure is not None:
            return _json(400, f"{failure.code} - message {index}: {failure.detail}")
    return _json(201, "Message OK")


def build_api(sim: Simulator) -> web.Application:
    """The DIP API application (mount it on an HTTPS site with :func:`server_ssl_context`)."""
    app = web.Application(middlewares=[refusals], client_max_size=sim.settings.max_body_bytes)
    app[SIM_KEY] = sim
    ca = CaPaths(sim.settings.ca_dir)
    app[VERIFIER_KEY] = SignatureVerifier(
        [load_cert(ca.ca_cert)], skew_seconds=sim.settings.skew_seconds
    )
    app[LIMITER_KEY] = RateLimiter(sim.settings.rate_limit_per_key)

    # The DIP does not enforce the case of URLs, so the fixed path segments match in any case.
    def ci(word: str) -> str:
        name = word.replace("-", "_")
        return "{_" + name + ":(?i:" + word + ")}"

    channel = f"/{ci('dip-channel')}/{{id}}"
    app.router.add_post(channel, send_messages)
    app.router.add_route("POST", f"{channel}/{ci('pubconfig')}/{{recipient}}", pubconfig)
    app.router.add_route("DELETE", f"{channel}/{ci('pubconfig')}/{{recipient}}", pubconfig)
    app.router.add_post(f"{channel}/{ci('replay')}/{{recipient}}", replay)
    app.router.add_post(f"{channel}/{ci('requeue')}/{{recipient}}", requeue)
    app.router.add_post(f"/{ci('statusmessage')}", status_message)
    app.router.add_route(
        "POST", f"/{ci('statusmessage')}/{ci('config')}/{{recipient}}", status_config
    )
    app.router.add_route(
        "DELETE", f"/{ci('statusmessage')}/{ci('config')}/{{recipient}}", status_config
    )
    app.router.add_post(f"/{ci('validate')}/{{id}}/{{event}}", validate)
    return app


class Service:
    """A running dipsim: API site, admin site, pusher, counterparties and housekeeping.

    Usable from tests (``await Service(settings).start()`` inside a running loop) and from the CLI.
    """

    def __init__(self, settings: Settings, validators: Validators | None = None) -> None:
        self.settings = settings
        self.sim = Simulator(settings, validators=validators)
        self.pusher = Pusher(self.sim)
        self.runners: list[web.AppRunner] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None
        self.admin_port: int | None = None
        self.extras: dict[str, Any] = {}

    async def start(self) -> None:
        settings = self.settings
        self.extras["counterparties"] = Counterparties(self.sim)
        api = web.AppRunner(build_api(self.sim), access_log=None, handle_signals=False)
        await api.setup()
        site = web.TCPSite(
            api,
            settings.host,
            settings.port,
            ssl_context=server_ssl_context(CaPaths(settings.ca_dir)),
        )
        await site.start()
        self.runners.append(api)
        self.port = api.addresses[0][1]
        if settings.admin_port is not None:
            admin = web.AppRunner(build_admin(self), access_log=None, handle_signals=False)
            await admin.setup()
            await web.TCPSite(admin, settings.admin_host, settings.admin_port).start()
            self.runners.append(admin)
            self.admin_port = admin.addresses[0][1]
        await self.pusher.start()
        self.tasks.append(asyncio.create_task(self.pusher.run()))
        self.tasks.append(asyncio.create_task(self._housekeeping()))

    @property
    def base_url(self) -> str:
        return f"https://{self.settings.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.settings.admin_host}:{self.admin_port}"

    async def _housekeeping(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(1.0)
            self.sim.flush_counters()
            if time.monotonic() - last_prune > 600:
                last_prune = time.monotonic()
                self.sim.store.prune(time.time() - self.settings.retention_hours * 3600)

    async def stop(self) -> None:
        traffic = self.extras.get("traffic")
        if traffic is not None:
            await traffic.stop()
        counterparties = self.extras.get("counterparties")
        if counterparties is not None:
            await counterparties.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.pusher.close()
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.sim.flush_counters()
        self.sim.store.close()
