"""Delivering events to the tenant's endpoints as signed webhooks, at least once.

One round for one tenant (``deliver_due``):
1. claim (short transaction): endpoints whose circuit has waited long enough become half-open and
   get exactly one probe; closed endpoints get up to ``per_endpoint`` due deliveries; each claimed
   row is leased, so a crashed worker's rows come back when the lease lapses;
2. send (no transaction open): one thread per endpoint, its deliveries in order; the URL is
   resolved and checked again and the request goes to an address that passed (DNS rebinding);
   after a failure the endpoint's remaining claimed rows are released untried, so a broken
   endpoint costs one timeout per round, not one per event;
   An endpoint that takes batches (``events_per_request`` above 1) gets its events in signed
   requests of that many (``batch_body``); the request's outcome is each of its events' outcome;
3. record (short transaction): an attempt row per try; delivered, or retried at a full-jitter
   exponential backoff, or parked once the attempts or the time budget are spent; the endpoint's
   circuit opens after ``DOWNSTREAM_CIRCUIT_THRESHOLD`` consecutive failures, and a probe's
   success closes it.

Tenants are served in rounds, at most one queued per tenant (``messaging.events.tasks``), so a
tenant's flood or broken endpoint delays other tenants by at most one round of its own: for a
broken endpoint, one connect or read timeout.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import certifi
import httpx
import orjson
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core import netguard
from core.tenancy import current_tenant_id, tenant_context
from messaging.events import endpoints as endpoint_services
from messaging.events import signing
from messaging.events.models import DeliveryState
from messaging.store import services as store
from messaging.store.states import InboundState
from tenants.models import CircuitState, DownstreamEndpoint

logger = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
USER_AGENT = "Busbar-Webhooks/1"

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """The public web's trust (certifi), plus the provider's extra CA file when one is set
    (``DOWNSTREAM_CA_FILE``, for tenants whose systems use a private PKI). Hostnames are always
    checked, against the URL's name even though the connection goes to a pinned address."""
    context = ssl.create_default_context(cafile=certifi.where())
    if settings.DOWNSTREAM_CA_FILE:
        context.load_verify_locations(cafile=settings.DOWNSTREAM_CA_FILE)
    return context


def http_client() -> httpx.Client:
    """One pooled client per process; redirects are not followed (a redirect could lead to an
    address that was never checked)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(
                verify=tls_context(),
                timeout=httpx.Timeout(
                    settings.DOWNSTREAM_READ_TIMEOUT, connect=settings.DOWNSTREAM_CONNECT_TIMEOUT
                ),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )
        return _client


@dataclass
class Job:
    delivery_id: int
    event_id: int
    endpoint_id: int
    attempt: int
    url: str
    body: bytes
    webhook_id: str
    secrets: list[str]
    created_at: datetime
    events_per_request: int = 1


@dataclass
class Outcome:
    job: Job
    started_at: datetime
    ok: bool
    tried: bool  # False: released untried after an earlier failure at the same endpoint
    http_status: int | None = None
    latency_ms: int | None = None
    error: str = ""
    # A batch's events share one request: only its first outcome counts for the circuit.
    first_of_request: bool = True


# --- 1. claim ------------------------------------------------------------------------------------

# The candidates are picked once (MATERIALIZED): as "WHERE d.id IN (subquery)" the planner may
# rescan the subquery for each row it updates, and each rescan, seeing the rows just leased as
# taken, picks the next ones, so a probe's LIMIT 1 leased the whole backlog.
CLAIM_SQL = """
WITH picked AS MATERIALIZED (
    SELECT c.id FROM tenants_downstreamendpoint e
    CROSS JOIN LATERAL (
        SELECT x.id FROM messaging_delivery x
        WHERE x.tenant_id = e.tenant_id AND x.endpoint_id = e.id AND x.state = 'pending'
          AND x.next_attempt_at <= now() AND (x.lease_until IS NULL OR x.lease_until < now())
        ORDER BY x.next_attempt_at, x.id
        LIMIT CASE WHEN e.id = ANY(%(probes)s) THEN 1
              ELSE greatest(%(per_endpoint)s, e.events_per_request * %(requests)s) END
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE e.enabled AND (e.circuit_state = 'closed' OR e.id = ANY(%(probes)s))
    LIMIT %(limit)s
)
UPDATE messaging_delivery d SET lease_until = now() + make_interval(secs => %(lease)s)
FROM picked WHERE d.id = picked.id
RETURNING d.id
"""


def claim_deliveries(
    *, tenant_id: uuid.UUID | str, limit: int = 100, per_endpoint: int = 50
) -> list[int]:
    """Lease up to ``limit`` due deliveries of the tenant (see the module docstring)."""
    with tenant_context(tenant_id):
        pause = timedelta(seconds=settings.DOWNSTREAM_CIRCUIT_PAUSE_SECONDS)
        # An open circuit whose pause is over goes half-open and gets one probe. The pause is
        # re-armed now, so a probe whose outcome is never recorded (a crash) is retried later.
        probes = list(
            DownstreamEndpoint.objects.filter(
                enabled=True,
                circuit_state__in=[CircuitState.OPEN, CircuitState.HALF_OPEN],
                circuit_retry_at__lte=timezone.now(),
            ).values_list("id", flat=True)
        )
        if probes:
            DownstreamEndpoint.objects.filter(id__in=probes).update(
                circuit_state=CircuitState.HALF_OPEN, circuit_retry_at=timezone.now() + pause
            )
        with connection.cursor() as cursor:
            cursor.execute(
                CLAIM_SQL,
                {
                    "lease": LEASE.total_seconds(),
                    "probes": probes,
                    "per_endpoint": per_endpoint,
                    # A batch receiver gets enough for its requests in flight.
                    "requests": PER_ENDPOINT_IN_FLIGHT,
                    "limit": limit,
                },
            )
            return [row[0] for row in cursor.fetchall()]


# The claimed deliveries with what their requests need. The payload comes as the text PostgreSQL
# stores and goes into the body as it is: decoding it into Python objects and encoding them again
# was most of a delivery round's CPU in the profile. The deliveries are read by their key first
# (MATERIALIZED): joined directly, the planner could start from the endpoint and walk every
# delivery it was ever owed, filtering them by id.
JOBS_SQL = """
WITH claimed AS MATERIALIZED (
    SELECT tenant_id, id, event_id, endpoint_id, attempts, created_at, next_attempt_at
    FROM messaging_delivery WHERE tenant_id = %s AND id = ANY(%s)
)
SELECT d.id, d.event_id, d.endpoint_id, d.attempts, d.created_at, p.url, p.events_per_request,
       e.uid, e.type, e.created_at, e.subject, e.mapping, e.mapping_version, e.source_message_id,
       e.source, s.uid, e.payload::text
FROM claimed d
JOIN messaging_event e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
JOIN tenants_downstreamendpoint p ON p.tenant_id = d.tenant_id AND p.id = d.endpoint_id
LEFT JOIN messaging_event s ON s.tenant_id = e.tenant_id AND s.id = e.supersedes_id
ORDER BY d.endpoint_id, d.next_attempt_at, d.id
"""


def _jobs(delivery_ids: list[int]) -> list[Job]:
    """The claimed deliveries as requests to make (inside the tenant's context); each body is
    the event's envelope exactly as ``selectors.event_envelope`` describes it."""
    with connection.cursor() as cursor:
        cursor.execute(JOBS_SQL, [current_tenant_id(), list(delivery_ids)])
        rows = cursor.fetchall()
    secrets_by_endpoint: dict[int, list[str]] = {}
    jobs = []
    for (
        delivery_id, event_id, endpoint_id, attempts, created_at, url, per_request,
        uid, type_, event_created_at, subject, mapping, mapping_version, source_message_id,
        source, supersedes_uid, payload,
    ) in rows:  # fmt: skip
        if endpoint_id not in secrets_by_endpoint:
            secrets_by_endpoint[endpoint_id] = endpoint_services.signing_secrets(
                endpoint_id=endpoint_id
            )
        webhook_id = f"evt_{uid.hex}"
        # orjson writes these values (text, 64-bit integers, null; text from PostgreSQL holds no
        # lone surrogate) byte for byte as json.dumps(ensure_ascii=False) does, five times faster.
        head = orjson.dumps(
            {
                "id": webhook_id,
                "type": type_,
                "timestamp": event_created_at.isoformat(),
                "subject": subject,
                "mapping": f"{mapping}@{mapping_version}" if mapping else None,
                "source_message_id": source_message_id,
                "source": source or None,
                "supersedes": f"evt_{supersedes_uid.hex}" if supersedes_uid else None,
            }
        )
        jobs.append(
            Job(
                delivery_id=delivery_id,
                event_id=event_id,
                endpoint_id=endpoint_id,
                attempt=attempts + 1,
                url=url,
                body=b"".join((head[:-1], b',"data":', payload.encode(), b"}")),
                webhook_id=webhook_id,
                secrets=secrets_by_endpoint[endpoint_id],
                created_at=created_at,
                events_per_request=per_request,
            )
        )
    return jobs


# --- 2. send -------------------------------------------------------------------------------------


def _pinned_request(
    url: str, address: netguard.Address
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by a checked address, the Host header, and the TLS server
    name, so the request reaches the address that passed the check and TLS still verifies the
    name."""
    parts = urlsplit(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = host + (f":{parts.port}" if parts.port else "")
    pinned = urlunsplit(parts._replace(netloc=netloc))
    host_header = parts.hostname or ""
    if parts.port:
        host_header += f":{parts.port}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return pinned, {"Host": host_header}, extensions


BATCH_TYPE = "event.batch"
BATCH_NAMESPACE = uuid.UUID("0b7f3f47-8a3e-4c61-9d7e-5be0d3b1a6f4")


def batch_body(jobs: list[Job]) -> tuple[str, bytes]:
    """The webhook-id and body of one request carrying several events.

    The body is ``{"type": "event.batch", "timestamp": ..., "data": {"events": [...]}}`` with
    each event's envelope exactly as a single delivery would send it, its ``id`` the one to
    deduplicate on. The request's own webhook-id is derived from the events it carries, so the
    same batch sent again has the same id.
    """
    webhook_id = "batch_" + uuid.uuid5(BATCH_NAMESPACE, ",".join(j.webhook_id for j in jobs)).hex
    head = (
        f'{{"type":"{BATCH_TYPE}","timestamp":"{timezone.now().isoformat()}",'
        f'"data":{{"count":{len(jobs)},"events":['
    ).encode()
    return webhook_id, head + b",".join(j.body for j in jobs) + b"]}}"


def send(job: Job) -> Outcome:
    """One signed POST of one event; never raises (the outcome says what happened)."""
    return send_request([job])[0]


def send_request(jobs: list[Job]) -> list[Outcome]:
    """One signed POST carrying these jobs' events (one job: the plain Standard Webhooks body;
    several: a batch). All of one endpoint. Never raises: every job gets the request's outcome."""
    job = jobs[0]
    started = timezone.now()
    clock = time.monotonic()

    def outcomes(**kwargs: Any) -> list[Outcome]:
        # What an endpoint answered is kept as text, and PostgreSQL's text holds no NUL: an
        # answer carrying one must not make the attempt impossible to record.
        if "\x00" in kwargs.get("error", ""):
            kwargs["error"] = kwargs["error"].replace("\x00", "\ufffd")
        return [
            Outcome(j, started, tried=True, first_of_request=n == 0, **kwargs)
            for n, j in enumerate(jobs)
        ]

    if job.events_per_request > 1:
        webhook_id, body = batch_body(jobs)
    else:
        webhook_id, body = job.webhook_id, job.body
    try:
        addresses = netguard.resolve_checked(job.url)
        url, headers, extensions = _pinned_request(job.url, addresses[0])
        headers.update(
            signing.signature_headers(
                secrets=job.secrets, webhook_id=webhook_id, timestamp=int(time.time()), body=body
            )
        )
        headers["Content-Type"] = "application/json"
        response = http_client().post(url, content=body, headers=headers, extensions=extensions)
    except netguard.UnsafeURLError as exc:
        return outcomes(ok=False, error=f"refused: {exc}"[:500])
    except signing.SecretError as exc:
        return outcomes(ok=False, error=str(exc)[:500])
    except httpx.HTTPError as exc:
        latency = int((time.monotonic() - clock) * 1000)
        kind = type(exc).__name__
        return outcomes(ok=False, latency_ms=latency, error=f"{kind}: {exc}"[:500])
    latency = int((time.monotonic() - clock) * 1000)
    ok = 200 <= response.status_code < 300
    error = "" if ok else f"HTTP {response.status_code}: {response.text[:200]}"
    return outcomes(ok=ok, http_status=response.status_code, latency_ms=latency, error=error)


PER_ENDPOINT_IN_FLIGHT = 8


def _requests(jobs: list[Job]) -> list[list[Job]]:
    """One endpoint's jobs cut into requests of at most its ``events_per_request``."""
    size = max(1, jobs[0].events_per_request)
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def _send_endpoint(jobs: list[Job]) -> list[Outcome]:
    """One endpoint's share of a round. The first request goes alone; only when it succeeds do
    the rest go, up to ``PER_ENDPOINT_IN_FLIGHT`` at a time (receivers must not rely on order:
    retries reorder anyway). After any failure the requests not yet started are released
    untried, so a hung endpoint costs one timeout per round."""
    requests = _requests(jobs)
    first = send_request(requests[0])
    untried = [job for request in requests[1:] for job in request]
    if not first[0].ok or not untried:
        return first + [Outcome(job, timezone.now(), ok=False, tried=False) for job in untried]
    failed = threading.Event()

    def attempt(request: list[Job]) -> list[Outcome]:
        if failed.is_set():
            return [Outcome(job, timezone.now(), ok=False, tried=False) for job in request]
        outcome = send_request(request)
        if not outcome[0].ok:
            failed.set()
        return outcome

    with ThreadPoolExecutor(max_workers=min(PER_ENDPOINT_IN_FLIGHT, len(requests) - 1)) as pool:
        return first + [o for done in pool.map(attempt, requests[1:]) for o in done]


def send_all(jobs: list[Job]) -> list[Outcome]:
    """Each endpoint in its own thread, its deliveries in order."""
    by_endpoint: dict[int, list[Job]] = {}
    for job in jobs:
        by_endpoint.setdefault(job.endpoint_id, []).append(job)
    if len(by_endpoint) == 1:
        return _send_endpoint(jobs)
    with ThreadPoolExecutor(max_workers=min(8, len(by_endpoint))) as pool:
        return [o for outcomes in pool.map(_send_endpoint, by_endpoint.values()) for o in outcomes]


# --- 3. record -----------------------------------------------------------------------------------


def backoff(attempts: int) -> timedelta:
    """Full jitter: uniform between zero and the capped exponential for this attempt."""
    ceiling = min(
        settings.DOWNSTREAM_RETRY_CAP_SECONDS,
        settings.DOWNSTREAM_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0),
    )
    return timedelta(seconds=random.uniform(0, ceiling))


# One statement for the whole round: per delivery its new state, or (untried) only its lease
# released, and an attempt row per try. A delivery no longer pending (disabled meanwhile) is left
# alone; its attempt is logged all the same. The rows travel as one JSON document: as parameter
# arrays and DeliveryAttempt objects they cost psycopg and Django a Python call per value, which
# was half of a delivery round's CPU.
RECORD_SQL = """
WITH v AS (
    SELECT * FROM json_to_recordset(%(rows)s::json) AS v(
        ord int, id bigint, endpoint_id bigint, tried boolean, state text, attempts int,
        next_attempt_at timestamptz, delivered_at timestamptz, last_status int, last_error text,
        started_at timestamptz, latency_ms int, ok boolean, error text)
), updated AS (
    UPDATE messaging_delivery d SET
        state = v.state,
        attempts = CASE WHEN v.tried THEN v.attempts ELSE d.attempts END,
        next_attempt_at = coalesce(v.next_attempt_at, d.next_attempt_at),
        delivered_at = v.delivered_at,
        lease_until = NULL,
        last_status = CASE WHEN v.tried THEN v.last_status ELSE d.last_status END,
        last_error = CASE WHEN v.tried THEN v.last_error ELSE d.last_error END
    FROM v
    WHERE d.tenant_id = %(tenant)s AND d.id = v.id AND d.state = 'pending'
)
INSERT INTO messaging_deliveryattempt (tenant_id, delivery_id, endpoint_id, attempt, started_at,
    latency_ms, http_status, ok, error)
SELECT %(tenant)s, id, endpoint_id, attempts, started_at, latency_ms, last_status, ok, error
FROM v WHERE tried ORDER BY ord
"""


def record_outcomes(*, tenant_id: uuid.UUID | str, outcomes: list[Outcome]) -> None:
    now = timezone.now()
    budget = timedelta(seconds=settings.DOWNSTREAM_BUDGET_SECONDS)
    max_attempts = settings.DOWNSTREAM_MAX_ATTEMPTS
    rows = []
    for n, o in enumerate(outcomes):
        job = o.job
        state, next_at, delivered_at, error = DeliveryState.PENDING, None, None, o.error
        if o.tried:
            if o.ok:
                state, delivered_at = DeliveryState.DELIVERED, now
            elif job.attempt >= max_attempts or (now - job.created_at >= budget):
                state = DeliveryState.PARKED
                error = f"parked after {job.attempt} attempts: {o.error}"[:500]
                logger.warning(
                    "delivery.parked",
                    extra={"delivery_id": job.delivery_id, "endpoint_id": job.endpoint_id},
                )
            else:
                next_at = now + backoff(job.attempt)
        rows.append(
            {
                "ord": n,
                "id": job.delivery_id,
                "endpoint_id": job.endpoint_id,
                "tried": o.tried,
                "state": state.value,
                "attempts": job.attempt,
                "next_attempt_at": next_at,
                "delivered_at": delivered_at,
                "last_status": o.http_status,
                "last_error": error,
                "started_at": o.started_at,
                "latency_ms": o.latency_ms,
                "ok": o.ok,
                "error": o.error,
            }
        )
    # orjson writes the aware datetimes as RFC 3339 with their microseconds and offset, which
    # PostgreSQL reads back to the same instant.
    document = orjson.dumps(rows).decode()
    with tenant_context(tenant_id) as tenant:
        with connection.cursor() as cursor:
            cursor.execute(RECORD_SQL, {"rows": document, "tenant": tenant})
        _update_circuits(outcomes, now)
        _mark_messages_delivered(tenant, [o.job.event_id for o in outcomes if o.ok])


# A source message is delivered once no event derived from it is still owed to anyone.
COMPLETE_MESSAGES_SQL = """
SELECT DISTINCT e.source_message_id FROM messaging_event e
WHERE e.tenant_id = %s AND e.id = ANY(%s) AND e.source_message_id IS NOT NULL
  AND NOT EXISTS (
    SELECT 1 FROM messaging_event o
    JOIN messaging_delivery d ON d.tenant_id = o.tenant_id AND d.event_id = o.id
    WHERE o.tenant_id = e.tenant_id AND o.source_message_id = e.source_message_id
      AND d.state = 'pending')
"""


def _mark_messages_delivered(tenant_id: uuid.UUID, event_ids: list[int]) -> list[int]:
    """Move the source messages whose every owed event has arrived from ``normalised`` to
    ``delivered`` (a message in any other state is left alone: the transition is conditional)."""
    if not event_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(COMPLETE_MESSAGES_SQL, [tenant_id, event_ids])
        message_ids = [row[0] for row in cursor.fetchall()]
    return store.transition(
        tenant_id=tenant_id,
        message_ids=message_ids,
        from_state=InboundState.NORMALISED,
        to_state=InboundState.DELIVERED,
        actor="delivery",
        reason="every subscribed endpoint acknowledged its events",
        direction="inbound",
    )


def _update_circuits(outcomes: list[Outcome], now: datetime) -> None:
    pause = timedelta(seconds=settings.DOWNSTREAM_CIRCUIT_PAUSE_SECONDS)
    threshold = settings.DOWNSTREAM_CIRCUIT_THRESHOLD
    tried: dict[int, list[Outcome]] = {}
    for o in outcomes:
        if o.tried and o.first_of_request:
            tried.setdefault(o.job.endpoint_id, []).append(o)
    for endpoint in DownstreamEndpoint.objects.select_for_update().filter(id__in=list(tried)):
        for o in tried[endpoint.id]:
            if o.ok:
                endpoint.circuit_state = CircuitState.CLOSED
                endpoint.consecutive_failures = 0
                endpoint.circuit_opened_at = None
                endpoint.circuit_retry_at = None
                endpoint.last_success_at = now
                continue
            endpoint.consecutive_failures += 1
            endpoint.last_failure_at = now
            endpoint.last_failure = o.error[:500]
            if endpoint.circuit_state == CircuitState.HALF_OPEN or (
                endpoint.consecutive_failures >= threshold
            ):
                if endpoint.circuit_state == CircuitState.CLOSED:
                    endpoint.circuit_opened_at = now
                    logger.warning("endpoint.circuit_opened", extra={"endpoint_id": endpoint.id})
                endpoint.circuit_state = CircuitState.OPEN
                endpoint.circuit_retry_at = now + pause
        endpoint.save(
            update_fields=[
                "circuit_state",
                "consecutive_failures",
                "circuit_opened_at",
                "circuit_retry_at",
                "last_success_at",
                "last_failure_at",
                "last_failure",
            ]
        )


# --- a round ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundResult:
    claimed: int
    delivered: int
    failed: int


def deliver_due(*, tenant_id: uuid.UUID | str, limit: int = 100) -> RoundResult:
    """Claim, send and record one round for the tenant. No transaction is open while sending."""
    if connection.in_atomic_block:
        raise RuntimeError("deliver_due sends over the network: call it outside a transaction")
    claimed = claim_deliveries(tenant_id=tenant_id, limit=limit)
    if not claimed:
        return RoundResult(0, 0, 0)
    with tenant_context(tenant_id):
        jobs = _jobs(claimed)
    outcomes = send_all(jobs)
    record_outcomes(tenant_id=tenant_id, outcomes=outcomes)
    return RoundResult(
        claimed=len(claimed),
        delivered=sum(o.ok for o in outcomes),
        failed=sum(o.tried and not o.ok for o in outcomes),
    )


def tenants_with_due_deliveries() -> list[str]:
    """Tenants with deliveries due or leases lapsed (a SECURITY DEFINER look-up: ids only)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tenant_id FROM busbar_tenants_with_due_deliveries()")
        return [str(row[0]) for row in cursor.fetchall()]
