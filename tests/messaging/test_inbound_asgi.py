"""The ingest server's own app, over both interfaces it speaks (ASGI, and RSGI as granian runs it):
routes, the body bound before reading, and back-pressure (503 with Retry-After and a metric,
before anything is read or stored)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client import REGISTRY

from messaging.inbound import backlog, receive
from messaging.inbound.asgi import FollowUps, IngestApp, Request, _client_address


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    content: bytes


def _call_asgi(method: str, path: str, *, app: IngestApp | None = None, **kwargs) -> Answer:
    async def go():
        transport = httpx.ASGITransport(app=app or IngestApp())
        async with httpx.AsyncClient(transport=transport, base_url="https://ingest.test") as c:
            return await c.request(method, path, **kwargs)

    response = asyncio.run(go())
    return Answer(response.status_code, dict(response.headers), response.content)


# RSGI, as granian calls the app: a scope of attributes and a protocol object whose body is one
# await (or an async iterator of chunks) and whose answer is one call. Unit-level stand-ins for
# granian's own objects; the end-to-end tests run the app under granian itself.
class RsgiHeaders:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return list(self.pairs)


@dataclass
class RsgiScope:
    method: str
    path: str
    headers: RsgiHeaders
    proto: str = "http"
    scheme: str = "https"
    client: str = "127.0.0.1:50000"


@dataclass
class RsgiProto:
    body: bytes
    chunk: int = 1024
    read: list[int] = field(default_factory=list)  # the bytes handed to the app, per read
    answers: list[tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=list)

    async def __call__(self) -> bytes:
        self.read.append(len(self.body))
        return self.body

    def __aiter__(self) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(self.body), self.chunk):
                self.read.append(min(self.chunk, len(self.body) - start))
                yield self.body[start : start + self.chunk]

        return chunks()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answers.append((status, headers, body))


def _call_rsgi(
    method: str,
    path: str,
    *,
    app: IngestApp | None = None,
    content: bytes = b"",
    headers: dict[str, str] | None = None,
    declare_length: bool = True,
) -> Answer:
    pairs = [(name.lower(), value) for name, value in (headers or {}).items()]
    if declare_length and method == "POST":
        pairs.append(("content-length", str(len(content))))
    proto = RsgiProto(content)
    asyncio.run((app or IngestApp()).__rsgi__(RsgiScope(method, path, RsgiHeaders(pairs)), proto))
    [(status, answer_headers, body)] = proto.answers
    return Answer(status, {k.lower(): v for k, v in answer_headers}, body)


@pytest.fixture(params=["asgi", "rsgi"])
def call(request) -> Callable[..., Answer]:
    return {"asgi": _call_asgi, "rsgi": _call_rsgi}[request.param]


def _shed(cause: str) -> float:
    return REGISTRY.get_sample_value("busbar_inbound_requests_shed_total", {"cause": cause}) or 0.0


def test_only_posts_to_webhook_paths_are_served(call):
    assert call("GET", "/healthz").status_code == 200
    assert call("GET", "/dip/webhooks/abc").status_code == 405
    assert call("GET", "/dip/webhooks/abc").headers["allow"] == "POST"
    assert call("POST", "/elsewhere").status_code == 404


def test_its_metrics_need_the_metrics_token_like_the_webs(settings, committed_db, call):
    settings.BUSBAR_METRICS_TOKEN = "ingest-scraper-token"
    assert call("GET", "/metrics").status_code == 401
    assert call("GET", "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    figures = call("GET", "/metrics", headers={"Authorization": "Bearer ingest-scraper-token"})
    assert figures.status_code == 200
    # the ingest server's own counters, and the store's flow figures (read from the database)
    assert b"busbar_inbound_messages_stored_total" in figures.content
    assert b"busbar_messages" in figures.content
    settings.BUSBAR_METRICS_TOKEN = ""
    assert call("GET", "/metrics").status_code == 403


def test_a_deep_backlog_sheds_load_with_retry_after(settings, call):
    settings.BUSBAR_INGEST_BACKLOG_LIMIT = 10
    backlog.set_for_tests(11)
    before = _shed("backlog")
    try:
        answer = call("POST", "/dip/webhooks/abc", content=b"[]")
    finally:
        backlog.set_for_tests(0)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == str(settings.BUSBAR_INGEST_RETRY_AFTER_SECONDS)
    assert _shed("backlog") == before + 1


def test_saturated_workers_shed_load_before_reading(settings, call):
    app = IngestApp()
    app.waiting = settings.BUSBAR_INGEST_QUEUE_LIMIT + app.concurrency  # every slot taken
    before = _shed("queue")
    answer = call("POST", "/dip/webhooks/abc", app=app, content=b"[]")
    assert answer.status_code == 503
    assert "retry-after" in answer.headers
    assert _shed("queue") == before + 1


@pytest.mark.usefixtures("committed_db")
def test_an_oversized_body_is_413_without_being_read(settings, call):
    settings.BUSBAR_WEBHOOK_MAX_BODY_BYTES = 1000
    backlog.set_for_tests(0)
    answer = call("POST", "/dip/webhooks/unknown", content=b"[" + b" " * 5000 + b"]")
    assert answer.status_code == 413


@pytest.mark.usefixtures("committed_db")
def test_over_rsgi_a_declared_length_is_read_in_one_await_and_an_undeclared_one_is_bounded(
    settings,
):
    """Under granian's RSGI a body of a declared length within the bound is one read; with no
    declared length (chunked) it is read chunk by chunk and refused once past the bound, not
    read to its end; a length declared past the bound is refused before any read."""
    settings.BUSBAR_WEBHOOK_MAX_BODY_BYTES = 5000
    backlog.set_for_tests(0)
    app = IngestApp()

    def push(body: bytes, declared: str | None) -> tuple[int, list[int]]:
        pairs = [("content-length", declared)] if declared is not None else []
        proto = RsgiProto(body)
        scope = RsgiScope("POST", "/dip/webhooks/unknown", RsgiHeaders(pairs))
        asyncio.run(app.__rsgi__(scope, proto))
        [(status, _headers, _body)] = proto.answers
        return status, proto.read

    body = b"[" + b" " * 3000 + b"]"
    assert push(body, str(len(body))) == (404, [len(body)])  # one read; an unknown channel
    assert push(body, None) == (404, [1024, 1024, 954])
    status, read = push(b"[" + b" " * 20_000 + b"]", None)
    assert status == 413
    assert sum(read) <= 5000 + 1024  # stopped at the first chunk past the bound
    assert push(b"[" + b" " * 20_000 + b"]", "20002") == (413, [])


def test_follow_ups_are_one_per_tenant_for_what_was_stored_meanwhile(monkeypatch):
    """While one follow-up is being published, later deliveries of the same tenant collapse into
    one follow-up naming the latest (a round processes every received message of the tenant)."""
    sent: list[tuple[str, int]] = []
    first_sending = threading.Event()
    release = threading.Event()

    def enqueue(tenant_id: str, delivery_id: int) -> None:
        sent.append((tenant_id, delivery_id))
        first_sending.set()
        release.wait(10)

    monkeypatch.setattr(receive, "enqueue_processing", enqueue)
    follow_ups = FollowUps()
    follow_ups.add("tenant-a", 1)
    assert first_sending.wait(10)
    for tenant_id, delivery_id in [("tenant-a", 3), ("tenant-b", 2), ("tenant-a", 5)]:
        follow_ups.add(tenant_id, delivery_id)
    release.set()
    follow_ups.stop()
    assert sent == [("tenant-a", 1), ("tenant-a", 5), ("tenant-b", 2)]


def test_the_backlog_gauge_keeps_one_broker_connection_and_replaces_a_broken_one():
    backlog.read_backlog()
    client = backlog._broker["client"]
    assert backlog.read_backlog() >= 0
    assert backlog._broker["client"] is client  # not a new connection per reading

    class Broken:
        def llen(self, key):
            raise ConnectionError("the broker went away")

    backlog._broker["client"] = Broken()
    with pytest.raises(ConnectionError):
        backlog.read_backlog()
    assert backlog.read_backlog() >= 0  # a new connection, read from the real Redis
    assert not isinstance(backlog._broker["client"], Broken)


def _request(peer: str | None, headers: dict[str, str]) -> Request:
    return Request(method="POST", path="/", scheme="https", headers=headers, peer=peer)


def test_the_senders_address_is_forwarded_only_by_a_trusted_proxy(settings):
    """Behind nginx the DIP's address is the forwarded one, believed as the web believes it."""
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]
    forwarded = {"x-forwarded-for": "203.0.113.9"}
    assert _client_address(_request("127.0.0.1", forwarded)) == "203.0.113.9"
    # anyone can send the header
    assert _client_address(_request("198.51.100.7", forwarded)) == "198.51.100.7"
    assert _client_address(_request(None, {})) is None


def test_both_interfaces_read_the_peer_and_the_path_alike():
    from messaging.inbound.asgi import _asgi_request, _rsgi_request

    asgi = _asgi_request(
        {
            "type": "http",
            "method": "POST",
            "path": "/dip/webhooks/tok",
            "raw_path": b"/dip/webhooks/tok",
            "scheme": "https",
            "headers": [(b"x-dip-signature", b"sig"), (b"host", b"ingest")],
            "client": ("2001:db8::7", 50000),
        }
    )
    rsgi = _rsgi_request(
        RsgiScope(
            "POST",
            "/dip/webhooks/tok",
            RsgiHeaders([("X-DIP-Signature", "sig"), ("host", "ingest")]),
            client="[2001:db8::7]:50000",
        )
    )
    assert asgi == rsgi
    assert rsgi.peer == "2001:db8::7"
    assert rsgi.headers["x-dip-signature"] == "sig"


def _checked_out() -> int:
    """How many of the process's pooled database connections are in use."""
    from django.db import connections

    stats = connections["default"].pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


@pytest.mark.usefixtures("committed_db")
def test_its_request_threads_hand_their_database_connections_back_to_the_pool():
    """A request thread that sat idle holding a pooled connection starved every other user of
    the pool (ten connections a process): threads that served a push must give theirs back."""

    def push(n: int) -> int:  # an unknown channel: looked up, refused and recorded
        return _call_asgi("POST", f"/dip/webhooks/unknown-{n}", content=b"[]").status_code

    assert push(0) == 404  # this thread (the event loop's) now holds its own connection
    before = _checked_out()
    assert [push(n) for n in range(1, 4)] == [404, 404, 404]
    # A connection handed back may take the pool a moment to count as available again.
    for _ in range(50):
        if _checked_out() <= before:
            break
        time.sleep(0.05)
    assert _checked_out() <= before
