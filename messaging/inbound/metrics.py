"""Prometheus figures of the webhook: what it stored, what it refused and what it shed."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES_STORED = Counter(
    "busbar_inbound_messages_stored_total", "DIP messages stored and acknowledged (201)."
)
DUPLICATES = Counter(
    "busbar_inbound_duplicate_messages_total",
    "DIP messages pushed again after they were stored (acknowledged, not stored twice).",
)
REFUSED = Counter(
    "busbar_inbound_requests_refused_total",
    "Webhook requests refused, by reason (bad signature, unknown channel, malformed...).",
    ["reason"],
)
SHED = Counter(
    "busbar_inbound_requests_shed_total",
    "Webhook requests answered 503/429 with Retry-After to shed load, by cause.",
    ["cause"],
)
LATENCY = Histogram(
    "busbar_inbound_request_seconds",
    "Time from a webhook request's body being read to its answer.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GROUP_PUSHES = Histogram(
    "busbar_inbound_group_pushes",
    "Pushes stored together in one group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
GROUP_SECONDS = Histogram(
    "busbar_inbound_group_commit_seconds",
    "Time to store and commit one group of pushes.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def accepted(count: int) -> None:
    MESSAGES_STORED.inc(count)


def refused(reason: str) -> None:
    REFUSED.labels(reason=reason).inc()


def shed(cause: str) -> None:
    SHED.labels(cause=cause).inc()


def duplicates(count: int) -> None:
    DUPLICATES.inc(count)
