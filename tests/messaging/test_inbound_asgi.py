"""The ingest server's own ASGI app: routes, the body bound before reading, and back-pressure
(503 with Retry-After and a metric, before anything is read or stored)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from prometheus_client import REGISTRY

from messaging.inbound import backlog, receive
from messaging.inbound.asgi import FollowUps, IngestApp, _client_address


def _call(method: str, path: str, **kwargs):
    async def go():
        transport = httpx.ASGITransport(app=IngestApp())
        async with httpx.AsyncClient(transport=transport, base_url="https://ingest.test") as c:
            return await c.request(method, path, **kwargs)

    return asyncio.run(go())


def _shed(cause: str) -> float:
    return REGISTRY.get_sample_value("busbar_inbound_requests_shed_total", {"cause": cause}) or 0.0


def test_only_posts_to_webhook_paths_are_served():
    assert _call("GET", "/healthz").status_code == 200
    assert _call("GET", "/dip/webhooks/abc").status_code == 405
    assert _call("POST", "/elsewhere").status_code == 404


def test_its_metrics_need_the_metrics_token_like_the_webs(settings, committed_db):
    settings.BUSBAR_METRICS_TOKEN = "ingest-scraper-token"
    assert _call("GET", "/metrics").status_code == 401
    assert _call("GET", "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    figures = _call("GET", "/metrics", headers={"Authorization": "Bearer ingest-scraper-token"})
    assert figures.status_code == 200
    # the ingest server's own counters, and the store's flow figures (read from the database)
    assert b"busbar_inbound_messages_stored_total" in figures.content
    assert b"busbar_messages" in figures.content
    settings.BUSBAR_METRICS_TOKEN = ""
    assert _call("GET", "/metrics").status_code == 403


def test_a_deep_backlog_sheds_load_with_retry_after(settings):
    settings.BUSBAR_INGEST_BACKLOG_LIMIT = 10
    backlog.set_for_tests(11)
    before = _shed("backlog")
    try:
        answer = _call("POST", "/dip/webhooks/abc", content=b"[]")
    finally:
        backlog.set_for_tests(0)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(settings.BUSBAR_INGEST_RETRY_AFTER_SECONDS)
    assert _shed("backlog") == before + 1


def test_saturated_workers_shed_load_before_reading(settings):
    app = IngestApp()
    app.waiting = settings.BUSBAR_INGEST_QUEUE_LIMIT + app.concurrency  # every slot taken

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://ingest.test") as c:
            return await c.post("/dip/webhooks/abc", content=b"[]")

    before = _shed("queue")
    answer = asyncio.run(go())
    assert answer.status_code == 503
    assert "Retry-After" in answer.headers
    assert _shed("queue") == before + 1


@pytest.mark.usefixtures("committed_db")
def test_an_oversized_body_is_413_without_being_read(settings):
    settings.BUSBAR_WEBHOOK_MAX_BODY_BYTES = 1000
    backlog.set_for_tests(0)
    answer = _call("POST", "/dip/webhooks/unknown", content=b"[" + b" " * 5000 + b"]")
    assert answer.status_code == 413


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


def test_the_senders_address_is_forwarded_only_by_a_trusted_proxy(settings):
    """Behind nginx the DIP's address is the forwarded one, believed as the web believes it."""
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]
    via_nginx = {"client": ("127.0.0.1", 50000)}
    forwarded = {"x-forwarded-for": "203.0.113.9"}
    assert _client_address(via_nginx, forwarded) == "203.0.113.9"
    direct = {"client": ("198.51.100.7", 50000)}
    assert _client_address(direct, forwarded) == "198.51.100.7"  # anyone can send the header
    assert _client_address({}, {}) is None


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
        return _call("POST", f"/dip/webhooks/unknown-{n}", content=b"[]").status_code

    assert push(0) == 404  # this thread (the event loop's) now holds its own connection
    before = _checked_out()
    assert [push(n) for n in range(1, 4)] == [404, 404, 404]
    # A connection handed back may take the pool a moment to count as available again.
    for _ in range(50):
        if _checked_out() <= before:
            break
        time.sleep(0.05)
    assert _checked_out() <= before
