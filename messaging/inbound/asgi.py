"""The DIP webhook's own lean ASGI app: ``granian --interface asgi messaging.inbound.asgi:app``.

It serves only ``POST /dip/webhooks/<token>`` (and ``/dip/webhooks/status/<token>``), plus
``/healthz`` and ``/metrics``. No middleware, sessions or templates: the body is read with a hard
size bound, the work (verify, parse, hash, compress) runs in a fixed pool of threads, and one
thread stores the pushes with group commit: every push that arrives while a commit is in flight
joins the next group, stored in one transaction and answered after it commits.

A small message push whose channel was seen in the last half-minute is prepared in the event
loop instead (no database access, and cheaper than the hand-off to a thread); anything it would
refuse goes to a pool thread, which checks it again and records the refusal.

Back-pressure: when more requests wait for a thread than ``BUSBAR_INGEST_QUEUE_LIMIT``, or the
unprocessed backlog is deeper than ``BUSBAR_INGEST_BACKLOG_LIMIT``, the answer is 503 with
``Retry-After`` (the DIP retries 503) before anything is read or stored: nothing is acknowledged
that is not stored, and the process never falls over under a flood.

TLS and the DIP's client certificate are checked by the server in front (nginx's mutual-TLS
server in production, granian's ``--ssl-ca <DIP CA> --ssl-client-verify`` in development);
this app checks the message signature of every request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import django
import psycopg

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
django.setup()

from django.conf import settings  # noqa: E402  (after django.setup())
from django.db import close_old_connections  # noqa: E402
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: E402

from core.clientaddr import client_address  # noqa: E402
from messaging.inbound import backlog, metrics, receive  # noqa: E402
from messaging.inbound.registration import STATUS_PATH, WEBHOOK_PATH  # noqa: E402
from messaging.store.services import open_group_connection  # noqa: E402

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1")
        headers[name] = raw_value.decode("latin-1")
    return headers


def _callback_url(scope: Scope, headers: dict[str, str]) -> str:
    """The URL the DIP called, as it signed it: the registered base URL plus the path (a proxy's
    or the socket's idea of the host is not trusted to match what was registered)."""
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    base = (settings.BUSBAR_WEBHOOK_BASE_URL or "").rstrip("/")
    if not base:
        base = f"{scope.get('scheme', 'https')}://{headers.get('host', '')}"
    return base + path


def _client_address(scope: Scope, headers: dict[str, str]) -> str | None:
    """The sender's address: behind nginx, the one it forwarded, believed under the same rule
    as the web's (``core.clientaddr``: only from a ``BUSBAR_TRUSTED_PROXIES`` peer)."""
    client = scope.get("client")
    meta = {
        "REMOTE_ADDR": client[0] if client else "",
        "HTTP_X_FORWARDED_FOR": headers.get("x-forwarded-for", ""),
    }
    return client_address(SimpleNamespace(META=meta))


async def _answer(send: Send, status: int, body: bytes = b"", headers: Any = ()) -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _metrics_text() -> bytes:
    close_old_connections()
    return bytes(generate_latest())


Prepared = tuple[receive.PreparedPush, receive.InboundDelivery]


def _warm_up() -> None:
    """Pay the one-time costs at start-up instead of in the first pushes: importing the broker
    transport and finalising the Celery app (first enqueue), and the first backlog reading.
    Measured on a loaded machine, these took seconds of CPU that the first pushes waited for."""
    from messaging.inbound.tasks import process_delivery_task

    process_delivery_task.app.finalize(auto=True)
    try:
        backlog.BACKLOG.set(backlog.read_backlog())
    except Exception as exc:  # Redis away at start-up: the gauge reads it later
        logger.warning("ingest.warm_up_backlog_unread", extra={"error": str(exc)[:200]})


def _work(
    kind: str, token: str, url: str, headers: dict[str, str], body: bytes, client: str | None
) -> receive.Answer | Prepared:
    """A request's own work, on a pool thread: for a message push, everything but storing it
    (verify, parse, hash, compress); the group committer stores it."""
    close_old_connections()  # a connection broken by the last request is replaced, not reused
    try:
        if kind == "status":
            return receive.receive_status_push(
                token=token, url=url, headers=headers, body=body, source_address=client
            )
        prepared = receive.prepare_push(
            token=token, url=url, headers=headers, body=body, source_address=client
        )
        if isinstance(prepared, receive.Answer):
            return prepared
        return prepared, receive.to_delivery(prepared)
    finally:
        # Back to the process's pool (what Django's request_finished does for its own views): a
        # pool thread idle between requests must not hold one of the pool's few connections.
        close_old_connections()


# A push up to this size is prepared in the event loop when its endpoint is cached (a message is
# about 5 KB); a larger one in a pool thread: a batch of 100 takes a few milliseconds, which in
# the loop would hold up reading every other request.
INLINE_MAX_BYTES = 64 * 1024

# A group stops growing at this many messages (a push is never split): big enough that eight
# senders' batches of 100 share a commit, small enough that one group's transaction stays short.
GROUP_MAX_MESSAGES = 2_000


class _WorkerThread:
    """One daemon thread, started by the first piece of work and woken by later ones; ``stop``
    lets it finish what is queued (its ``_run`` returns once ``_stopping`` is set and nothing
    is left), then joins it. Subclasses queue work under ``_wake`` and call ``_started``."""

    name = "ingest-worker"

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def _started(self) -> None:
        """Start the thread if it is not running (call with ``_wake`` held)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join()


class Reply:
    """Where a push's answer goes: a future of the event loop serving its request."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.future = future


def _settle(replies: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Set each future's result (on its loop); an exception is set as the future's exception."""
    for future, outcome in replies:
        if future.done():  # the client went away meanwhile
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def reply(to: Reply, outcome: receive.Answer | BaseException) -> None:
    """Hand ``outcome`` to the request waiting for it (from any thread)."""
    to.loop.call_soon_threadsafe(_settle, [(to.future, outcome)])


class GroupCommitter(_WorkerThread):
    """Group commit: one thread stores every push that arrived while the previous group was
    being committed, in one transaction, then answers each of them (a push the database refuses
    is answered 503 alone: see ``store_inbound_group``).

    Concurrent single-message pushes thus share one commit and one WAL flush instead of queueing
    for one each, and the rollup counters get one increment per group. A push is answered only
    after the commit that stored it; if that commit fails, every push of the group gets 503.
    The answers of a group reach each event loop in one wake-up, and the processing follow-ups
    of its stored deliveries are handed to ``follow_ups`` once per group.
    """

    name = "ingest-group-commit"

    def __init__(
        self, max_messages: int = GROUP_MAX_MESSAGES, follow_ups: FollowUps | None = None
    ) -> None:
        super().__init__()
        self.max_messages = max_messages
        self.follow_ups = follow_ups
        self._pending: list[tuple[Prepared, Reply]] = []

    @property
    def pending(self) -> int:
        """Pushes waiting for the next group."""
        with self._wake:
            return len(self._pending)

    def submit(self, push: Prepared, to: Reply) -> None:
        """Queue ``push``; its answer is set on ``to`` after its group's commit."""
        with self._wake:
            if self._stopping:
                raise RuntimeError("the group committer has stopped")
            self._started()
            self._pending.append((push, to))
            self._wake.notify()

    def _next_group(self) -> list[tuple[Prepared, Reply]]:
        with self._wake:
            while not self._pending and not self._stopping:
                self._wake.wait()
            group: list[tuple[Prepared, Reply]] = []
            messages = 0
            while self._pending:
                size = len(self._pending[0][0][0].messages)
                if group and messages + size > self.max_messages:
                    break
                group.append(self._pending.pop(0))
                messages += size
            return group

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            group = self._next_group()
            if not group:
                if conn is not None:
                    conn.close()
                return  # stopping, and everything queued has been answered
            started = time.perf_counter()
            try:
                if conn is None or conn.closed:
                    conn = open_group_connection()
                answers = receive.commit_group(conn, [push for push, _to in group])
            except BaseException:  # never leave a sender waiting for an answer that cannot come
                logger.exception("webhook.group_commit_failed")
                if conn is not None:
                    conn.close()
                answers = [receive.not_stored(push[0].endpoint) for push, _to in group]
            metrics.GROUP_PUSHES.observe(len(group))
            metrics.GROUP_SECONDS.observe(time.perf_counter() - started)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            stored: dict[str, int] = {}
            for (_push, to), answer in zip(group, answers, strict=True):
                by_loop.setdefault(to.loop, []).append((to.future, answer))
                if answer.status == 201 and answer.delivery_id is not None and answer.tenant_id:
                    stored[answer.tenant_id] = max(
                        answer.delivery_id, stored.get(answer.tenant_id, 0)
                    )
            for loop, replies in by_loop.items():
                loop.call_soon_threadsafe(_settle, replies)
            if stored and self.follow_ups is not None:
                # After the answers, in its own thread: the DIP never waits on the broker.
                self.follow_ups.add_all(stored)


class FollowUps(_WorkerThread):
    """The processing follow-ups of stored deliveries, sent by one thread after the answers, at
    most one per tenant for everything stored since the last were sent.

    A follow-up only asks for a round of the tenant's oldest received messages (the round finds
    every delivery stored before it, and a full round queues the next), so one per tenant covers
    any number of deliveries committed before it is sent. Publishing a Celery task costs about
    2 ms of this process's CPU: one per push was the largest single cost of a single-message
    push. A follow-up that is lost (broker away, process killed) only delays the work until the
    sweeper finds the received messages.
    """

    # After sending, the thread waits this long before the next sending, so a busy server
    # publishes at most a few follow-ups per tenant a second whatever its push rate; the rounds
    # they start take far longer than this. (At 50 ms, twenty publishes a second took 6% of a
    # busy server's CPU, for rounds that were still running.)
    INTERVAL_SECONDS = 0.25

    name = "ingest-follow-ups"

    def __init__(self) -> None:
        super().__init__()
        self._due: dict[str, int] = {}  # tenant -> the latest stored delivery

    def add(self, tenant_id: str, delivery_id: int) -> None:
        self.add_all({tenant_id: delivery_id})

    def add_all(self, stored: dict[str, int]) -> None:
        """Note the latest stored delivery of each tenant in ``stored``."""
        with self._wake:
            if self._stopping:
                return  # shutting down: the sweeper picks it up
            self._started()
            idle = not self._due
            for tenant_id, delivery_id in stored.items():
                self._due[tenant_id] = max(delivery_id, self._due.get(tenant_id, 0))
            # Only the first waits to be sent: the thread takes everything due at once, so
            # waking it for every push (a context switch each) bought nothing.
            if idle:
                self._wake.notify()

    def _take(self) -> dict[str, int]:
        with self._wake:
            while not self._due and not self._stopping:
                self._wake.wait()
            due, self._due = self._due, {}
            return due

    def _run(self) -> None:
        while True:
            due = self._take()
            if not due:
                return  # stopping, and every follow-up has been sent
            for tenant_id, delivery_id in due.items():
                receive.enqueue_processing(tenant_id, delivery_id)
            with self._wake:
                if not self._stopping:
                    self._wake.wait_for(lambda: self._stopping, timeout=self.INTERVAL_SECONDS)


class IngestApp:
    """The ASGI callable. One instance per process."""

    def __init__(self) -> None:
        self.concurrency = max(1, settings.BUSBAR_INGEST_CONCURRENCY)
        self.executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ingest")
        self.follow_ups = FollowUps()
        self.committer = GroupCommitter(follow_ups=self.follow_ups)
        self.waiting = 0
        self.max_body = settings.BUSBAR_WEBHOOK_MAX_BODY_BYTES

    async def __call__(self, scope: Scope, receive_: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive_, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/healthz":
            await _answer(send, 200, b'{"status":"ok"}', [("Content-Type", "application/json")])
            return
        if path == "/metrics" and method == "GET":
            # The same rule as the web's /metrics (core.health.metrics): the figures name
            # tenants, so only a scraper holding BUSBAR_METRICS_TOKEN gets them. Collecting them
            # queries the database (the message-flow collector): in a thread, not in the loop.
            expected = settings.BUSBAR_METRICS_TOKEN
            if not expected:
                await _answer(send, 403)
                return
            scheme, _, presented = _headers(scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode(), expected.encode()
            ):
                await _answer(send, 401, headers=[("WWW-Authenticate", 'Bearer realm="busbar"')])
                return
            figures = await asyncio.get_running_loop().run_in_executor(self.executor, _metrics_text)
            await _answer(send, 200, figures, [("Content-Type", CONTENT_TYPE_LATEST)])
            return
        if path.startswith(STATUS_PATH):
            kind, token = "status", path[len(STATUS_PATH) :]
        elif path.startswith(WEBHOOK_PATH):
            kind, token = "push", path[len(WEBHOOK_PATH) :]
        else:
            await _answer(send, 404)
            return
        if method != "POST":
            await _answer(send, 405, headers=[("Allow", "POST")])
            return
        await self._push(scope, receive_, send, kind, token)

    async def _push(
        self, scope: Scope, receive_: Receive, send: Send, kind: str, token: str
    ) -> None:
        retry_after = str(settings.BUSBAR_INGEST_RETRY_AFTER_SECONDS)
        if self.waiting >= settings.BUSBAR_INGEST_QUEUE_LIMIT + self.concurrency:
            metrics.shed("queue")
            await _answer(send, 503, headers=[("Retry-After", retry_after)])
            return
        if backlog.too_deep():
            metrics.shed("backlog")
            await _answer(send, 503, headers=[("Retry-After", retry_after)])
            return
        headers = _headers(scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(send, kind, token, headers, scope)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive_()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(send, kind, token, headers, scope)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[receive.Answer] = loop.create_future()
        url = _callback_url(scope, headers)
        self.waiting += 1
        try:
            if not self._store_small_push(kind, token, url, headers, body, Reply(loop, answered)):
                self.executor.submit(
                    self._handle,
                    Reply(loop, answered),
                    kind,
                    token,
                    url,
                    headers,
                    body,
                    _client_address(scope, headers),
                )
            answer = await answered
        finally:
            self.waiting -= 1
        metrics.LATENCY.observe(time.perf_counter() - started)
        await _answer(send, answer.status, answer.body, answer.headers)

    def _store_small_push(
        self, kind: str, token: str, url: str, headers: dict[str, str], body: bytes, to: Reply
    ) -> bool:
        """Prepare a small message push here, in the event loop, and queue it for the group
        committer; False when it is not one this can do without the database (unknown or
        uncached token, a body over ``INLINE_MAX_BYTES``, anything that would be refused), and
        then a pool thread does all of it, recording any refusal.

        A single-message push's work takes about 0.14 ms of CPU; handing it to a pool thread and
        back cost about as much again (the thread's wake-up, the GIL passing between threads).
        """
        if kind != "push" or len(body) > INLINE_MAX_BYTES:
            return False
        endpoint = receive.cached_endpoint(token)
        if endpoint is None:
            return False
        prepared = receive.prepare_push_quietly(
            endpoint=endpoint, url=url, headers=headers, body=body
        )
        if prepared is None:
            return False
        self.committer.submit((prepared, receive.to_delivery(prepared)), to)
        return True

    def _handle(
        self,
        to: Reply,
        kind: str,
        token: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        client: str | None,
    ) -> None:
        """On a pool thread: the request's own work, then its push straight to the group
        committer, which answers it after the commit; the event loop is woken once, for the
        answer, not also between the work and the store."""
        try:
            outcome = _work(kind, token, url, headers, body, client)
            if isinstance(outcome, receive.Answer):
                reply(to, outcome)
            else:
                self.committer.submit(outcome, to)
        except BaseException as exc:  # the request fails as it would have in the loop
            reply(to, exc)

    async def _too_large(
        self, send: Send, kind: str, token: str, headers: dict[str, str], scope: Scope
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(
            self.executor,
            receive.refuse_oversized,
            kind,
            token,
            headers,
            self.max_body,
            _client_address(scope, headers),
        )
        await _answer(send, 413, headers=[("Connection", "close")])

    async def _lifespan(self, receive_: Receive, send: Send) -> None:
        while True:
            message = await receive_()
            if message["type"] == "lifespan.startup":
                # Beside the start-up, not before it: the socket opens at once (a slow machine
                # must not keep the DIP's pushes out), and a push arriving meanwhile waits on
                # the import lock for what the warm-up is loading rather than loading it twice.
                threading.Thread(target=_warm_up, name="ingest-warm-up", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.executor.shutdown(wait=True)
                self.committer.stop()
                self.follow_ups.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = IngestApp()
