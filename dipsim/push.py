"""Delivery of accepted messages and status messages to recipients' webhooks.

Pushes are batched per (recipient, channel), signed with the DIP's signing certificate, sent over
mTLS with the DIP's client certificate, and retried on 408/429/5xx (not 505) and network errors
with exponential back-off; any other non-2xx answer parks the delivery at once, as does reaching
the attempt limit. Parked and delivered messages stay available to ``/replay`` and ``/requeue``.

One batch per (recipient, channel) is in flight at a time, so a recipient sees its messages in
acceptance order unless an ``out_of_order`` fault says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from typing import Any

import aiohttp

from dipsim import codes
from dipsim.engine import STATUS_CHANNEL, Simulator, mark_replayed
from dipsim.faults import Fault
from dipsim.pki import CaPaths
from dipsim.signing import H_MPO, H_SIGNATURE, Signer

logger = logging.getLogger("dipsim.push")
# How long a lone message waits for a second one under an ``out_of_order`` fault, per attempt.
HOLD_SECONDS = 0.3


def client_ssl_context(ca_paths: CaPaths, extra_ca_files: list[Any]) -> ssl.SSLContext:
    """TLS context for pushes: trusts dipsim's CA (plus extras) and presents the DIP's client cert."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_paths.ca_cert))
    for path in extra_ca_files:
        context.load_verify_locations(cafile=str(path))
    cert, key = ca_paths.pair("dip-mtls")
    context.load_cert_chain(str(cert), str(key))
    return context


class Pusher:
    """The delivery loop of one :class:`Simulator`."""

    def __init__(self, sim: Simulator, rng: random.Random | None = None) -> None:
        self.sim = sim
        settings = sim.settings
        self.ca_paths = CaPaths(settings.ca_dir)
        self.signer = Signer.from_files(*map(str, self.ca_paths.pair("dip-signing")))
        self.expired_signer = Signer.from_files(
            *map(str, self.ca_paths.pair("dip-signing-expired"))
        )
        self.ssl_context = client_ssl_context(self.ca_paths, settings.webhook_ca_files)
        self.session: aiohttp.ClientSession | None = None
        # Batches in flight per target, the delivery ids they carry, and targets whose every due
        # delivery is already in flight (skipped until one of their batches finishes).
        self.busy: dict[tuple[str, str], int] = {}
        self.inflight: set[int] = set()
        self.saturated: set[tuple[str, str]] = set()
        self.tasks: set[asyncio.Task[bool]] = set()
        self.rng = rng or random.Random()
        self._stopping = False
        self._held: dict[tuple[str, str], int] = {}
        self._held_faults: dict[tuple[str, str], Fault] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            ssl=self.ssl_context, limit=self.sim.settings.push_concurrency * 2
        )
        self.session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        self._stopping = True
        self.sim.wake.set()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task
        if self.session is not None:
            await self.session.close()

    def backoff(self, attempts: int) -> float:
        settings = self.sim.settings
        delay = settings.retry_base_seconds * settings.retry_factor ** max(0, attempts - 1)
        delay = min(delay, settings.retry_max_delay_seconds)
        # Full jitter on the upper half keeps retries of many deliveries from moving in lockstep.
        return delay * (0.5 + self.rng.random() * 0.5)

    async def run(self) -> None:
        """Deliver due work until :meth:`close`; wakes on new work or when the next retry is due."""
        sim = self.sim
        while not self._stopping:
            sim.wake.clear()
            timeout = 1.0
            if sim.faults.outage():
                await asyncio.sleep(0.2)
                continue
            now = time.time()
            soonest: float | None = None
            for target in list(sim.pending_targets):
                if sum(self.busy.values()) >= sim.settings.push_concurrency:
                    break
                if (
                    target in self.saturated
                    or self.busy.get(target, 0) >= sim.settings.push_parallel_per_target
                ):
                    continue
                due = sim.store.target_next_due(*target)
                if due is None:
                    # Nothing pending any more; whoever adds work puts the target back.
                    sim.pending_targets.discard(target)
                elif due <= now:
                    room = min(
                        sim.settings.push_parallel_per_target - self.busy.get(target, 0),
                        sim.settings.push_concurrency - sum(self.busy.values()),
                    )
                    # Each task claims its rows before its first await, so parallel batches to one
                    # target never carry the same delivery.
                    for _ in range(max(1, room)):
                        self.busy[target] = self.busy.get(target, 0) + 1
                        task = asyncio.create_task(self._deliver(target))
                        self.tasks.add(task)
                        task.add_done_callback(self._done(target))
                else:
                    soonest = due if soonest is None else min(soonest, due)
            if soonest is not None:
                timeout = max(0.01, min(timeout, soonest - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sim.wake.wait(), timeout)

    def _done(self, target: tuple[str, str]) -> Any:
        def callback(task: asyncio.Task[bool]) -> None:
            self.tasks.discard(task)
            self.busy[target] -= 1
            if self.busy[target] <= 0:
                del self.busy[target]
            if not task.cancelled() and task.exception() is None and task.result():
                # A batch that carried deliveries has finished: the target may have due work again.
                self.saturated.discard(target)
            if not task.cancelled() and task.exception() is not None:
                logger.error("push.crashed", exc_info=task.exception())
            self.sim.wake.set()

        return callback

    async def _deliver(self, target: tuple[str, str]) -> bool:
        """Push one batch to ``target``; return whether there was anything to push."""
        sim = self.sim
        recipient, channel = target
        webhook = sim.store.webhook(channel, recipient)
        registry = sim.registry()
        participant = registry.participants.get(recipient)
        limit = sim.settings.push_batch_max
        if webhook is not None and webhook["max_count"]:
            limit = max(1, min(limit, int(webhook["max_count"])))
        due_by = time.time()
        if target in self._held_faults:
            # A message held back for an out_of_order fault goes with the next one to arrive,
            # however soon that one comes: that is the order the fault is there to break.
            due_by += HOLD_SECONDS * 2
        rows = sim.store.due_deliveries(recipient, channel, due_by, limit + len(self.inflight))
        rows = [row for row in rows if row["id"] not in self.inflight][:limit]
        if not rows:
            if self.busy.get(target, 0) > 1:
                self.saturated.add(target)
            return False
        kind = rows[0]["kind"]
        rows = [row for row in rows if row["kind"] == kind]
        claimed = {row["id"] for row in rows}
        self.inflight |= claimed
        try:
            await self._send_rows(target, kind, rows, webhook, participant)
        finally:
            self.inflight -= claimed
        return True

    async def _send_rows(
        self, target: tuple[str, str], kind: str, rows: list[Any], webhook: Any, participant: Any
    ) -> None:
        sim = self.sim
        recipient, channel = target
        if kind == "message":
            bodies = sim.store.message_bodies([row["ref"] for row in rows])
        else:
            bodies = sim.store.status_bodies([row["ref"] for row in rows])
        items: list[tuple[Any, bytes]] = []
        for row in rows:
            body = bodies.get(row["ref"])
            if body is None:
                self._finish([(row, "parked", None, "message no longer stored")])
                continue
            if kind == "message":
                if row["replay"]:
                    body = mark_replayed(body)
                body = b'{"payload":' + body + b"}"
            items.append((row, body))
        if participant is not None and participant.simulated and sim.counterparty is not None:
            self._finish([(row, "delivered", None, None) for row, _ in items])
            sim.count("push.simulated", len(items))
            sim.counterparty(participant, kind, [json.loads(body) for _, body in items])
            return
        if webhook is None:
            self._finish([(row, "waiting", None, "no webhook registered") for row, _ in items])
            return
        max_bytes = int(webhook["max_kb"]) * 1024 if webhook["max_kb"] else None
        if max_bytes:
            kept: list[Any] = []
            size = 2
            for row, body in items:
                if kept and size + len(body) + 1 > max_bytes:
                    break
                kept.append((row, body))
                size += len(body) + 1
            items = kept
        faults = sim.faults.pick(
            "egress", None if channel == STATUS_CHANNEL else channel, recipient
        )
        held = self._held_faults.pop(target, None)
        if held is not None and all(f.kind != "out_of_order" for f in faults):
            faults.append(held)
        kinds = {fault.kind for fault in faults}
        if "out_of_order" in kinds:
            hold = max(
                2, int(next(f for f in faults if f.kind == "out_of_order").params.get("hold", 2))
            )
            if len(items) < hold and self._held.get(target, 0) < 3:
                # Wait for more messages so that there is an order to break, keeping the rule
                # (already consumed) for the next attempt.
                self._held[target] = self._held.get(target, 0) + 1
                self._held_faults[target] = next(f for f in faults if f.kind == "out_of_order")
                self._finish(
                    [(row, "pending", None, None) for row, _ in items],
                    delay=HOLD_SECONDS,
                    count_attempt=False,
                )
                return
            self._held.pop(target, None)
            items.reverse()
        body = b"[" + b",".join(b for _, b in items) + b"]"
        status, error = await self._post(webhook["url"], body, recipient, faults)
        if status is not None and "duplicate" in kinds and 200 <= status < 300:
            await self._post(webhook["url"], body, recipient, [])
            sim.count("push.duplicated", len(items))
        sim.count("push.requests")
        results: list[tuple[Any, str, int | None, str | None]] = []
        if status is not None and 200 <= status < 300:
            results = [(row, "delivered", status, None) for row, _ in items]
            sim.count("push.delivered", len(items))
        elif status is not None and not codes.should_retry(status):
            results = [(row, "parked", status, error) for row, _ in items]
            sim.count("push.parked", len(items))
        else:
            for row, _ in items:
                if row["attempts"] + 1 >= sim.settings.max_attempts:
                    results.append((row, "parked", status, error or "attempt limit reached"))
                    sim.count("push.parked")
                else:
                    results.append((row, "retry", status, error))
                    sim.count("push.retried")
        self._finish(results)

    def _finish(
        self,
        results: list[tuple[Any, str, int | None, str | None]],
        delay: float = 0.0,
        count_attempt: bool = True,
    ) -> None:
        now = time.time()
        updates = []
        for row, state, status, error in results:
            attempts = row["attempts"] + (
                1 if count_attempt and state in {"delivered", "parked", "retry"} else 0
            )
            if state == "retry":
                updates.append(
                    ("pending", attempts, now + self.backoff(attempts), status, error, row["id"])
                )
            else:
                updates.append((state, attempts, now + delay, status, error, row["id"]))
        if updates:
            self.sim.store.update_deliveries(updates)

    async def _post(
        self, url: str, body: bytes, recipient: str, faults: list[Fault]
    ) -> tuple[int | None, str | None]:
        """POST one signed batch. Returns ``(status, error text)``; status None on a network failure."""
        assert self.session is not None
        kinds = {fault.kind: fault for fault in faults}
        if "latency" in kinds:
            await asyncio.sleep(float(kinds["latency"].params.get("ms", 1000)) / 1000)
        if "drop" in kinds:
            self.sim.count("fault.egress.drop")
            return None, "dropped by fault injection"
        if "malformed" in kinds:
            body = body[: max(1, len(body) // 2)]
        signer = self.expired_signer if "expired_signature" in kinds else self.signer
        # The RSA signature releases the GIL: signing in a thread overlaps it with the event loop.
        headers = await asyncio.to_thread(signer.headers, "POST", url, body)
        if "bad_signature" in kinds:
            signature = headers[H_SIGNATURE]
            headers[H_SIGNATURE] = ("A" if signature[0] != "A" else "B") + signature[1:]
        recipient_participant = self.sim.registry().participants.get(recipient)
        if recipient_participant is not None:
            headers[H_MPO] = recipient_participant.mpid
        headers["Content-Type"] = "application/json"
        try:
            async with self.session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.sim.settings.push_timeout_seconds),
            ) as response:
                text = await response.text(errors="replace")
                return response.status, None if response.status < 300 else text[:500]
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            return None, f"{type(err).__name__}: {err}"[:500]
