"""Writing to the message store: receipt, submission, transitions, claiming, retries, findings.

Every function runs inside the caller's ``tenant_context`` (RLS decides what it can touch) and takes
the tenant id explicitly as well, so each statement names the tenant its keys lead with. The hot
paths (receipt, transition, claim) are one or two set-based statements whatever the batch size: no
model instance and no query per message.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import orjson
import psycopg
import zstandard
from django.db import connection, transaction
from psycopg.types.json import Jsonb

from messaging.store.states import INBOUND_INITIAL, OUTBOUND_INITIAL, TRANSITIONS, check_transition

logger = logging.getLogger(__name__)

# Level 1: DESIGN's calibration (about 260 bytes a 5 KB IF-021 message) at the least CPU per byte.
ZSTD_LEVEL = 1
# Counter rows are split by writing backend so concurrent transactions rarely wait on one row.
ROLLUP_SHARDS = 8
_SHARD_SQL = f"(pg_backend_pid() %% {ROLLUP_SHARDS})::smallint"  # %% escapes psycopg

# Column widths of messaging_message: a value that does not fit (only a malformed message has one)
# is stored empty rather than failing the receipt; the raw bytes keep it and validation names it.
_WIDTHS = {
    "interface_id": 8,
    "schema_version": 10,
    "event_code": 50,
    "transaction_id": 65,
    "sender_unique_reference": 200,
    "correlation_id": 60,
    "mpan": 13,
    "business_key": 120,
}


def _fit(name: str, value: str | None) -> str:
    if not value or len(value) > _WIDTHS[name] or "\x00" in value:
        return ""
    return value


def compress(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)


def decompress(blob: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(blob)


# --- receipt ---------------------------------------------------------------------------------


# Not frozen, for the same reason as the webhook's PushedMessage: one per message received.
@dataclass(slots=True)
class InboundMessageFacts:
    """What the webhook read from one message of a delivery (all optional but the slice).

    ``offset``/``length`` locate the message's exact bytes in the delivery body. Without a usable
    DIP transaction id the message is deduplicated on the hash of its bytes.
    """

    offset: int
    length: int
    sha256: bytes
    transaction_id: str | None = None
    interface_id: str = ""
    schema_version: str = ""
    event_code: str = ""
    sender_unique_reference: str = ""
    correlation_id: str = ""
    mpan: str = ""
    business_key: str = ""

    @property
    def dedupe_key(self) -> str:
        transaction_id = _fit("transaction_id", self.transaction_id)
        return transaction_id or f"sha256:{self.sha256.hex()}"


@dataclass(frozen=True)
class StoredDelivery:
    raw_id: int
    message_ids: list[int]  # per input message: its id, or the original's for a duplicate
    duplicate: list[bool]  # per input message: it had been received before

    @property
    def new_message_ids(self) -> list[int]:
        return [mid for mid, dup in zip(self.message_ids, self.duplicate, strict=True) if not dup]


def _insert_raw(
    *,
    tenant_id: UUID | str,
    kind: str,
    direction: str,
    connection_id: int,
    channel_id: int | None,
    body: bytes,
    headers: dict[str, Any],
    message_count: int,
    response_status: int | None = None,
    response_body: bytes | None = None,
) -> int:
    params: list[Any] = [
        str(tenant_id),
        kind,
        direction,
        connection_id,
        channel_id,
        compress(body),
        hashlib.sha256(body).digest(),
        len(body),
        Jsonb(headers),
        message_count,
        response_status,
        response_body,
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO messaging_raw (tenant_id, kind, direction, connection_id, channel_id,"
            " body_zstd, body_sha256, body_size, headers, message_count, response_status,"
            " response_body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            params,
        )
        return int(cursor.fetchone()[0])


def _rollup_sql(source: str, *, direction_sql: str, state_sql: str, sign: str = "") -> str:
    """Two data-modifying CTE clauses adding ``source``'s rows to the hourly and current counts.

    ``source`` must yield connection_id and interface_id columns (one row per message). The
    counter rows are written in key order, so two statements sharing a shard (two backends with
    the same ``pg_backend_pid() % ROLLUP_SHARDS``) never wait on each other in a cycle.
    """
    return f"""
    , rolled_{sign or "in"} AS (
        INSERT INTO messaging_flow_rollup AS r
            (tenant_id, connection_id, interface_id, direction, hour, state, shard, entered)
        SELECT %(tenant)s, connection_id, interface_id, {direction_sql},
               date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', {state_sql},
               {_SHARD_SQL}, count(*)
        FROM {source} GROUP BY connection_id, interface_id ORDER BY connection_id, interface_id
        ON CONFLICT (tenant_id, connection_id, interface_id, direction, hour, state, shard)
        DO UPDATE SET entered = r.entered + EXCLUDED.entered
    )
    , counted_{sign or "in"} AS (
        INSERT INTO messaging_state_count AS c
            (tenant_id, connection_id, interface_id, direction, state, shard, count)
        SELECT %(tenant)s, connection_id, interface_id, {direction_sql}, {state_sql},
               {_SHARD_SQL}, count(*)
        FROM {source} GROUP BY connection_id, interface_id ORDER BY connection_id, interface_id
        ON CONFLICT (tenant_id, connection_id, interface_id, direction, state, shard)
        DO UPDATE SET count = c.count + EXCLUDED.count
    )"""


# The message rows of an inbound delivery as one JSON document (``_message_rows``), read back by
# ``json_to_recordset``: encoded by orjson in C, where thirteen parameter arrays cost psycopg a
# Python call per element (about 7% of the ingest server's CPU per batched message).
_INBOUND_INPUT_SQL = """input AS (
        SELECT t.delivery, t.ord, t.dedupe_key, t.transaction_id, t.raw_offset, t.raw_length,
            decode(t.sha256, 'hex') AS sha256, t.interface_id, t.schema_version, t.event_code,
            t.sender_unique_reference, t.correlation_id, t.mpan, t.business_key
        FROM json_to_recordset(%(messages)s::json) AS t(delivery int, ord int, dedupe_key text,
            transaction_id text, raw_offset int, raw_length int, sha256 text, interface_id text,
            schema_version text, event_code text, sender_unique_reference text,
            correlation_id text, mpan text, business_key text)
    )"""


def _message_row(m: InboundMessageFacts, ord_: int, delivery: int | None = None) -> dict[str, Any]:
    return {
        "delivery": delivery,
        "ord": ord_,
        "dedupe_key": m.dedupe_key,
        "transaction_id": _fit("transaction_id", m.transaction_id) or None,
        "raw_offset": m.offset,
        "raw_length": m.length,
        "sha256": m.sha256.hex(),
        "interface_id": _fit("interface_id", m.interface_id),
        "schema_version": _fit("schema_version", m.schema_version),
        "event_code": _fit("event_code", m.event_code),
        "sender_unique_reference": _fit("sender_unique_reference", m.sender_unique_reference),
        "correlation_id": _fit("correlation_id", m.correlation_id),
        "mpan": _fit("mpan", m.mpan),
        "business_key": _fit("business_key", m.business_key),
    }


def _message_rows(messages: Sequence[InboundMessageFacts]) -> str:
    return orjson.dumps([_message_row(m, ord_) for ord_, m in enumerate(messages)]).decode()


@transaction.atomic
def store_inbound_delivery(
    *,
    tenant_id: UUID | str,
    connection_id: int,
    channel_id: int | None,
    body: bytes,
    headers: dict[str, Any],
    messages: Sequence[InboundMessageFacts],
    response_status: int | None = None,
    response_body: bytes | None = None,
) -> StoredDelivery:
    """Store one DIP delivery and its messages in one transaction, deduplicated.

    The raw body is stored once (compressed); each message whose dedupe key (DIP transaction id)
    is new gets a row in state ``received``; a message seen before (in an earlier delivery or
    earlier in this one) gets no row and reports the original's id.
    """
    raw_id = _insert_raw(
        tenant_id=tenant_id,
        kind="delivery",
        direction="inbound",
        connection_id=connection_id,
        channel_id=channel_id,
        body=body,
        headers=headers,
        message_count=len(messages),
        response_status=response_status,
        response_body=response_body,
    )
    if not messages:
        return StoredDelivery(raw_id=raw_id, message_ids=[], duplicate=[])
    keys = [m.dedupe_key for m in messages]
    params: dict[str, Any] = {
        "tenant": str(tenant_id),
        "connection": connection_id,
        "channel": channel_id,
        "raw": raw_id,
        "messages": _message_rows(messages),
    }
    sql = (
        """
    WITH """
        + _INBOUND_INPUT_SQL
        + """, first AS (
        SELECT DISTINCT ON (dedupe_key) * FROM input ORDER BY dedupe_key, ord
    ), claimed AS (
        INSERT INTO messaging_inbound_key (tenant_id, dedupe_key, message_id)
        SELECT %(tenant)s, dedupe_key, busbar_next_id() FROM first ORDER BY ord
        ON CONFLICT DO NOTHING
        RETURNING dedupe_key, message_id
    ), inserted AS (
        INSERT INTO messaging_message (tenant_id, id, direction, connection_id, channel_id, raw_id,
            raw_offset, raw_length, sha256, interface_id, schema_version, event_code,
            transaction_id, sender_unique_reference, correlation_id, mpan, business_key, state)
        SELECT %(tenant)s, c.message_id, 'inbound', %(connection)s, %(channel)s, %(raw)s,
            f.raw_offset, f.raw_length, f.sha256, f.interface_id, f.schema_version, f.event_code,
            f.transaction_id, f.sender_unique_reference, f.correlation_id, f.mpan, f.business_key,
            %(initial)s
        FROM claimed c JOIN first f USING (dedupe_key)
        RETURNING connection_id, interface_id
    )"""
        + _rollup_sql("inserted", direction_sql="'inbound'", state_sql="%(initial)s")
        + """
    SELECT dedupe_key, message_id FROM claimed"""
    )
    params["initial"] = str(INBOUND_INITIAL)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        new_keys = {row[0]: int(row[1]) for row in cursor.fetchall()}
        missing = sorted(set(keys) - set(new_keys))
        existing: dict[str, int] = {}
        if missing:
            cursor.execute(
                "SELECT dedupe_key, message_id FROM messaging_inbound_key"
                " WHERE tenant_id = %s AND dedupe_key = ANY(%s)",
                [str(tenant_id), missing],
            )
            existing = {row[0]: int(row[1]) for row in cursor.fetchall()}
    message_ids: list[int] = []
    duplicate: list[bool] = []
    first_seen: set[str] = set()
    for key in keys:
        if key in new_keys and key not in first_seen:
            first_seen.add(key)
            message_ids.append(new_keys[key])
            duplicate.append(False)
        else:
            message_ids.append(new_keys.get(key) or existing[key])
            duplicate.append(True)
    return StoredDelivery(raw_id=raw_id, message_ids=message_ids, duplicate=duplicate)


# --- group receipt ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InboundDelivery:
    """One webhook push ready to store: everything CPU-bound (hashing, compression, the answer)
    was done before it reached the group, so the committing thread only talks to the database."""

    tenant_id: str
    connection_id: int
    channel_id: int | None
    body_zstd: bytes
    body_sha256: bytes
    body_size: int
    headers: dict[str, Any]
    messages: Sequence[InboundMessageFacts]
    response_body: bytes


@dataclass(frozen=True)
class DeliveryRefused:
    """A delivery of a group that the database refused; its neighbours are unaffected."""

    error: Exception


# One statement per tenant of a group: every delivery's raw blob, the dedupe keys claimed, the
# narrow message rows and the rollup counters. The deliveries' scalars come as one JSON document
# (orjson, in C) and their bytes as bytea arrays, zipped by ``ROWS FROM``. The arrays go in binary
# (``%(name)b``): psycopg's text form of a bytea array is hex, quoted and escaped by a regular
# expression element by element, which cost 9.4 ms of both sides' CPU for a group of eight
# pushes of 100 (0.4 ms in binary), about a tenth of the ingest server's time;
# the raw ids are drawn first (``MATERIALIZED``: once per delivery) so each message row can name
# its delivery's. A key is claimed by its first message in arrival order, so a later delivery of
# the group that repeats it is a duplicate, as it would be in a later group. The result: one row
# per delivery (its position and raw id), then one per distinct key (its message id and whether
# this statement claimed it; the id is NULL for a key that a transaction committing after this
# statement's snapshot claimed first). Its layout whitespace is squeezed out: psycopg caches the
# parsing of a query's placeholders only for queries of at most 4 KB, and parsing this one again
# for every group cost the committer 7% of its time.
_GROUP_TENANT_SQL = " ".join(
    (
        """
    WITH delivery AS MATERIALIZED (
        SELECT busbar_next_id() AS raw_id, d.*
        FROM ROWS FROM (
            json_to_recordset(%(deliveries)s::json) AS (connection_id bigint, channel_id bigint,
                body_size int, headers json, message_count int),
            unnest(%(zstd)b::bytea[]), unnest(%(body_sha)b::bytea[]),
            unnest(%(response)b::bytea[])
        ) WITH ORDINALITY AS d(connection_id, channel_id, body_size, headers, message_count,
            body_zstd, body_sha256, response_body, ord)
    ), raw AS (
        INSERT INTO messaging_raw (tenant_id, id, kind, direction, connection_id, channel_id,
            body_zstd, body_sha256, body_size, headers, message_count, response_status,
            response_body)
        SELECT %(tenant)s, raw_id, 'delivery', 'inbound', connection_id, channel_id, body_zstd,
            body_sha256, body_size, headers::jsonb, message_count, 201, response_body
        FROM delivery ORDER BY ord
    ), """
        + _INBOUND_INPUT_SQL
        + """, first AS (
        SELECT DISTINCT ON (dedupe_key) * FROM input ORDER BY dedupe_key, delivery, ord
    ), claimed AS (
        INSERT INTO messaging_inbound_key (tenant_id, dedupe_key, message_id)
        SELECT %(tenant)s, dedupe_key, busbar_next_id() FROM first ORDER BY delivery, ord
        ON CONFLICT DO NOTHING
        RETURNING dedupe_key, message_id
    ), inserted AS (
        INSERT INTO messaging_message (tenant_id, id, direction, connection_id, channel_id, raw_id,
            raw_offset, raw_length, sha256, interface_id, schema_version, event_code,
            transaction_id, sender_unique_reference, correlation_id, mpan, business_key, state)
        SELECT %(tenant)s, c.message_id, 'inbound', d.connection_id, d.channel_id, d.raw_id,
            f.raw_offset, f.raw_length, f.sha256, f.interface_id, f.schema_version, f.event_code,
            f.transaction_id, f.sender_unique_reference, f.correlation_id, f.mpan, f.business_key,
            %(initial)s
        FROM claimed c JOIN first f USING (dedupe_key) JOIN delivery d ON d.ord = f.delivery
        RETURNING connection_id, interface_id
    )"""
        + _rollup_sql("inserted", direction_sql="'inbound'", state_sql="%(initial)s")
        + """
    SELECT ord, raw_id, NULL::text, NULL::bigint, NULL::boolean FROM delivery
    UNION ALL
    SELECT NULL, NULL, f.dedupe_key,
        coalesce(c.message_id, (SELECT k.message_id FROM messaging_inbound_key k
            WHERE k.tenant_id = %(tenant)s AND k.dedupe_key = f.dedupe_key)),
        c.message_id IS NOT NULL
    FROM first f LEFT JOIN claimed c USING (dedupe_key)"""
    ).split()
)


def _tenant_params(tenant: str, deliveries: Sequence[InboundDelivery]) -> dict[str, Any]:
    """The parameters of ``_GROUP_TENANT_SQL`` for one tenant's deliveries (numbered from 1,
    as ``WITH ORDINALITY`` numbers them)."""
    return {
        "tenant": tenant,
        "initial": str(INBOUND_INITIAL),
        "deliveries": orjson.dumps(
            [
                {
                    "connection_id": d.connection_id,
                    "channel_id": d.channel_id,
                    "body_size": d.body_size,
                    "headers": d.headers,
                    "message_count": len(d.messages),
                }
                for d in deliveries
            ]
        ).decode(),
        "zstd": [d.body_zstd for d in deliveries],
        "body_sha": [d.body_sha256 for d in deliveries],
        "response": [d.response_body for d in deliveries],
        "messages": orjson.dumps(
            [
                _message_row(m, ord_, delivery)
                for delivery, d in enumerate(deliveries, 1)
                for ord_, m in enumerate(d.messages)
            ]
        ).decode(),
    }


@dataclass
class _TenantResult:
    """One tenant's part of a group, read from its statement's rows."""

    tenant: str
    indexes: list[int]  # the deliveries' positions in the group, in arrival order
    raw_ids: list[int]
    keys: dict[str, tuple[int | None, bool]]  # key -> (message id, claimed by this group)

    @property
    def unseen(self) -> list[str]:
        """Keys claimed by a concurrent transaction after the statement's snapshot."""
        return [key for key, (message_id, _claimed) in self.keys.items() if message_id is None]


def _tenant_result(tenant: str, indexes: list[int], rows: list[tuple[Any, ...]]) -> _TenantResult:
    raw_ids: dict[int, int] = {}
    keys: dict[str, tuple[int | None, bool]] = {}
    for ord_, raw_id, key, message_id, claimed in rows:
        if key is None:
            raw_ids[int(ord_)] = int(raw_id)
        else:
            keys[key] = (int(message_id) if message_id is not None else None, bool(claimed))
    return _TenantResult(
        tenant=tenant,
        indexes=indexes,
        raw_ids=[raw_ids[ord_] for ord_ in range(1, len(indexes) + 1)],
        keys=keys,
    )


def _set_tenant(conn: psycopg.Connection[Any], tenant: str) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", [tenant])


def store_inbound_group(
    conn: psycopg.Connection[Any], deliveries: Sequence[InboundDelivery]
) -> list[StoredDelivery | DeliveryRefused]:
    """Store several deliveries (of any tenants) in one transaction: group commit.

    A delivery the database refuses is reported as :class:`DeliveryRefused` while the others are
    kept: when anything of the group fails, the group is rolled back and each delivery is
    stored again in a transaction of its own, so the refused one fails alone (rare; the group
    needs no savepoints on its usual path). Deduplication holds across the group (a transaction
    id claimed by an earlier delivery of the same group makes a later one a duplicate) and
    against every earlier group. Each tenant's deliveries are written by one statement (raw
    blobs, dedupe keys, message rows and rollup counters, under that tenant's RLS setting),
    tenants in a fixed order and counter rows in key order, so two groups committing at once
    never wait on each other in a cycle over the counters.

    ``conn`` is a psycopg connection of the runtime role in autocommit mode, used by nobody else
    meanwhile. Everything goes through one pipeline: per tenant its setting and its statement,
    one implicit transaction and one round trip for all of it. On a busy machine a round trip,
    not the work, is what a small push costs.

    Returns one outcome per delivery, in order, once the transaction has committed. Raises
    psycopg.Error when the group could not be committed: then nothing of it is stored. (In one
    rare case it raises after the commit: a duplicate whose original a concurrent group
    committed meanwhile has its id read after the commit, and if that read fails the stored
    group is reported as failed; its deliveries, pushed again, are answered as duplicates.)
    """
    try:
        results = _store_group(conn, deliveries)
    except psycopg.Error as exc:
        if conn.closed or conn.broken or len(deliveries) == 1:
            raise
        logger.warning("store.group_stored_one_by_one", extra={"error": str(exc)[:200]})
        _end_failed_transaction(conn)
        results = None
    if results is not None:
        return list(_outcomes(conn, deliveries, results))
    # Something of the group was refused: each delivery again in a transaction of its own, so
    # the refused one fails alone and its neighbours are stored (rare: a push the database
    # refuses; the group's speed does not matter here, its neighbours' answers do).
    outcomes: list[StoredDelivery | DeliveryRefused] = []
    for delivery in deliveries:
        try:
            alone = _store_group(conn, [delivery])
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                raise
            _end_failed_transaction(conn)
            outcomes.append(DeliveryRefused(exc))
            continue
        outcomes += _outcomes(conn, [delivery], alone)
    return outcomes


def _end_failed_transaction(conn: psycopg.Connection[Any]) -> None:
    """Make sure a failed group left no transaction open. Its implicit transaction was already
    rolled back at the pipeline's Sync; a needless ROLLBACK would also make psycopg forget
    every statement it prepared on this connection."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


def _store_group(
    conn: psycopg.Connection[Any], deliveries: Sequence[InboundDelivery]
) -> list[_TenantResult]:
    """``store_inbound_group``'s work in one transaction, committed when this returns; any
    failure raises (psycopg may raise it from any later statement of the pipeline, not only at
    a sync), and then nothing of the group is committed."""
    # Each tenant's deliveries together, in arrival order (all that deduplication depends on).
    by_tenant: dict[str, list[int]] = {}
    for index, delivery in enumerate(deliveries):
        by_tenant.setdefault(str(delivery.tenant_id), []).append(index)
    # Every parameter is built before anything is sent: the pipeline below has no BEGIN or
    # COMMIT. In autocommit mode everything a pipeline sends before its one Sync runs as one
    # implicit transaction, committed at the Sync or, if the server refuses any of it, rolled
    # back whole (tenant settings included); psycopg sends that Sync when the block exits, even
    # on an exception, so nothing that could raise may run between two of its statements. Two
    # fewer messages and results per group cost the committer a fifth less CPU (0.65 to 0.53 ms
    # for a group of eight single pushes).
    statements = [
        (
            tenant,
            by_tenant[tenant],
            _tenant_params(tenant, [deliveries[i] for i in by_tenant[tenant]]),
        )
        for tenant in sorted(by_tenant)
    ]
    queued: list[tuple[str, list[int], psycopg.Cursor[Any]]] = []
    with conn.pipeline():
        for tenant, indexes, params in statements:
            _set_tenant(conn, tenant)
            cursor = conn.cursor()
            cursor.execute(_GROUP_TENANT_SQL, params)
            queued.append((tenant, indexes, cursor))
    return [
        _tenant_result(tenant, indexes, cursor.fetchall()) for tenant, indexes, cursor in queued
    ]


def _outcomes(
    conn: psycopg.Connection[Any],
    deliveries: Sequence[InboundDelivery],
    results: list[_TenantResult],
) -> list[StoredDelivery]:
    """Each delivery's outcome from its tenant's result, in the group's order; the ids of keys
    a concurrent transaction claimed unseen are read now that the group has committed (rare)."""
    outcomes: list[StoredDelivery | None] = [None] * len(deliveries)
    for result in results:
        unseen = result.unseen
        late: dict[str, int] = {}
        if unseen:
            with conn.transaction():
                _set_tenant(conn, result.tenant)
                late = {
                    key: int(message_id)
                    for key, message_id in conn.execute(
                        "SELECT dedupe_key, message_id FROM messaging_inbound_key"
                        " WHERE tenant_id = %s AND dedupe_key = ANY(%s)",
                        [result.tenant, unseen],
                    ).fetchall()
                }
        first_seen: set[str] = set()
        for index, raw_id in zip(result.indexes, result.raw_ids, strict=True):
            message_ids: list[int] = []
            duplicate: list[bool] = []
            for message in deliveries[index].messages:
                key = message.dedupe_key
                message_id, claimed = result.keys[key]
                message_ids.append(message_id if message_id is not None else late[key])
                duplicate.append(not claimed or key in first_seen)
                first_seen.add(key)
            outcomes[index] = StoredDelivery(
                raw_id=raw_id, message_ids=message_ids, duplicate=duplicate
            )
    return [outcome for outcome in outcomes if outcome is not None]


def open_group_connection(using: str = "default") -> psycopg.Connection[Any]:
    """A psycopg connection of its own (the role and settings of the Django database ``using``),
    in autocommit mode, outside Django's transactions: a group committer manages its transaction
    in its pipeline, and a long job records its progress where others see it at once.
    Server-side binding, so compressed bodies travel as binary parameters.

    Every statement is prepared on its first use (``prepare_threshold = 0``): a group's few
    statement shapes repeat for the connection's whole life, and planning them again (CTEs over
    partitioned tables) was half of PostgreSQL's CPU for a single-message push (1.40 against
    0.73 ms per push, measured on one connection)."""
    from django.db import connections

    params = connections[using].get_connection_params()
    params.pop("cursor_factory", None)
    conn = psycopg.connect(**params, autocommit=True)
    conn.prepare_threshold = 0
    return conn


# --- submission ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboundMessageFacts:
    """What is known of an outbound message when a client submits it."""

    interface_id: str
    event_code: str = ""
    schema_version: str = ""
    correlation_id: str = ""
    mpan: str = ""
    business_key: str = ""
    urgent: bool = False


@transaction.atomic
def store_outbound_messages(
    *,
    tenant_id: UUID | str,
    connection_id: int,
    channel_id: int | None,
    source_body: bytes,
    headers: dict[str, Any],
    messages: Sequence[OutboundMessageFacts],
) -> tuple[int, list[int]]:
    """Store a client's submission as received and one ``accepted`` message row per message.

    Returns the submission blob's id and the new message ids in input order.
    """
    raw_id = _insert_raw(
        tenant_id=tenant_id,
        kind="submission",
        direction="outbound",
        connection_id=connection_id,
        channel_id=channel_id,
        body=source_body,
        headers=headers,
        message_count=len(messages),
    )
    params: dict[str, Any] = {
        "tenant": str(tenant_id),
        "connection": connection_id,
        "channel": channel_id,
        "raw": raw_id,
        "initial": str(OUTBOUND_INITIAL),
        "ord": list(range(len(messages))),
        "iface": [_fit("interface_id", m.interface_id) for m in messages],
        "sv": [_fit("schema_version", m.schema_version) for m in messages],
        "ev": [_fit("event_code", m.event_code) for m in messages],
        "corr": [_fit("correlation_id", m.correlation_id) for m in messages],
        "mpan": [_fit("mpan", m.mpan) for m in messages],
        "bkey": [_fit("business_key", m.business_key) for m in messages],
        "urgent": [bool(m.urgent) for m in messages],
    }
    sql = (
        """
    WITH input AS (
        SELECT * FROM unnest(%(ord)s::int[], %(iface)s::text[], %(sv)s::text[], %(ev)s::text[],
            %(corr)s::text[], %(mpan)s::text[], %(bkey)s::text[], %(urgent)s::boolean[])
        AS t(ord, interface_id, schema_version, event_code, correlation_id, mpan, business_key,
             urgent)
    ), numbered AS (
        SELECT busbar_next_id() AS id, * FROM input ORDER BY ord
    ), inserted AS (
        INSERT INTO messaging_message (tenant_id, id, direction, connection_id, channel_id,
            source_raw_id, interface_id, schema_version, event_code, correlation_id, mpan,
            business_key, urgent, state)
        SELECT %(tenant)s, id, 'outbound', %(connection)s, %(channel)s, %(raw)s, interface_id,
            schema_version, event_code, correlation_id, mpan, business_key, urgent, %(initial)s
        FROM numbered
        RETURNING id, connection_id, interface_id
    )"""
        + _rollup_sql("inserted", direction_sql="'outbound'", state_sql="%(initial)s")
        + """
    SELECT n.ord, n.id FROM numbered n ORDER BY n.ord"""
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [int(row[1]) for row in cursor.fetchall()]
    return raw_id, ids


@transaction.atomic
def attach_payloads(
    *,
    tenant_id: UUID | str,
    connection_id: int,
    channel_id: int | None,
    payloads: Sequence[tuple[int, bytes, str]],
) -> int:
    """Store outbound messages' final bytes as one blob and point each message at its slice.

    ``payloads`` holds (message id, exact bytes as they will be sent, sender unique reference).
    The columns are written once: a message that already has final bytes raises (the database
    refuses), so a resend always reuses the stored bytes and reference.
    """
    body = b"".join(payload for _, payload, _ in payloads)
    raw_id = _insert_raw(
        tenant_id=tenant_id,
        kind="payload",
        direction="outbound",
        connection_id=connection_id,
        channel_id=channel_id,
        body=body,
        headers={},
        message_count=len(payloads),
    )
    offsets, position = [], 0
    for _, payload, _ in payloads:
        offsets.append(position)
        position += len(payload)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE messaging_message m
            SET raw_id = %(raw)s, raw_offset = u.off, raw_length = u.len, sha256 = u.sha,
                sender_unique_reference = u.sur
            FROM unnest(%(ids)s::bigint[], %(off)s::int[], %(len)s::int[], %(sha)s::bytea[],
                        %(sur)s::text[]) AS u(id, off, len, sha, sur)
            WHERE m.tenant_id = %(tenant)s AND m.id = u.id
            """,
            {
                "tenant": str(tenant_id),
                "raw": raw_id,
                "ids": [mid for mid, _, _ in payloads],
                "off": offsets,
                "len": [len(p) for _, p, _ in payloads],
                "sha": [hashlib.sha256(p).digest() for _, p, _ in payloads],
                "sur": [sur for _, _, sur in payloads],
            },
        )
    return raw_id


def set_transaction_ids(*, tenant_id: UUID | str, pairs: Iterable[tuple[int, str]]) -> int:
    """Record the DIP's transaction id of each (message id, transaction id); written once."""
    items = list(pairs)
    if not items:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE messaging_message m SET transaction_id = u.tx"
            " FROM unnest(%s::bigint[], %s::text[]) AS u(id, tx)"
            " WHERE m.tenant_id = %s AND m.id = u.id AND m.transaction_id IS DISTINCT FROM u.tx",
            [[mid for mid, _ in items], [tx for _, tx in items], str(tenant_id)],
        )
        return cursor.rowcount


# --- reading the bytes -----------------------------------------------------------------------


def raw_body(*, tenant_id: UUID | str, raw_id: int) -> bytes:
    """A raw blob's exact bytes; raises LookupError when it is not this tenant's or was purged."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT body_zstd FROM messaging_raw WHERE tenant_id = %s AND id = %s",
            [str(tenant_id), raw_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise LookupError(f"no raw blob {raw_id} for this tenant")
    if row[0] is None:
        raise LookupError(f"raw blob {raw_id} was removed at the end of its retention")
    return decompress(bytes(row[0]))


class _HasSlice(Protocol):
    tenant_id: Any
    raw_id: int | None
    raw_offset: int | None
    raw_length: int | None


def message_bytes(message: _HasSlice, *, body: bytes | None = None) -> bytes:
    """The message's exact bytes: its slice of its raw blob (pass ``body`` to reuse a blob)."""
    if message.raw_id is None or message.raw_offset is None or message.raw_length is None:
        raise LookupError("this message has no stored bytes yet")
    if body is None:
        body = raw_body(tenant_id=message.tenant_id, raw_id=message.raw_id)
    return body[message.raw_offset : message.raw_offset + message.raw_length]


# --- state -----------------------------------------------------------------------------------


def transition(
    *,
    tenant_id: UUID | str,
    message_ids: Sequence[int],
    from_state: str,
    to_state: str,
    actor: str,
    reason: str = "",
    detail: dict[str, Any] | None = None,
    direction: str | None = None,
    error: str = "",
    reset_attempts: bool = True,
    transaction_ids: Mapping[int, str] | None = None,
) -> list[int]:
    """Move the messages still in ``from_state`` to ``to_state``; return the ids that moved.

    One statement: the conditional update, the timeline rows and the counters. A message that has
    already moved on is left alone, so a stale or repeated task does nothing. The lease and any
    scheduled retry are cleared; ``attempts`` restarts unless ``reset_attempts`` is False.
    ``transaction_ids`` (message id to the DIP's transaction id) are written by the same update:
    one new row version per message sent, not two.
    """
    directions = [direction] if direction else list(TRANSITIONS)
    allowed = [d for d in directions if to_state in TRANSITIONS[d].get(from_state, ())]
    if not allowed:
        check_transition(directions[0], from_state, to_state)  # raises with the allowed edges
    if not message_ids:
        return []
    # The messages are found by their key; the state is only a guard, written as a whole that no
    # index can serve (IS TRUE). As a plain condition, the planner may read every message in
    # ``from_state`` through the work index and filter them by id (it does whenever its statistics
    # make the state look rare), so a round over a backlog cost in proportion to the backlog.
    sql = (
        """
    WITH moved AS (
        UPDATE messaging_message
        SET state = %(to)s, state_changed_at = now(), lease_until = NULL, next_attempt_at = NULL,
            last_error = %(error)s,
            attempts = CASE WHEN %(reset)s THEN 0 ELSE attempts END,
            transaction_id = coalesce(
                (%(txs)s::text[])[array_position(%(tx_for)s::bigint[], id)], transaction_id)
        WHERE tenant_id = %(tenant)s AND id = ANY(%(ids)s)
          AND (state = %(from)s AND direction = ANY(%(directions)s)) IS TRUE
        RETURNING id, connection_id, interface_id, direction, created_at
    ), timeline AS (
        INSERT INTO messaging_transition (tenant_id, message_id, from_state, to_state, actor,
                                          reason, detail)
        SELECT %(tenant)s, id, %(from)s, %(to)s, %(actor)s, %(reason)s, %(detail)s FROM moved
    ), rolled AS (
        INSERT INTO messaging_flow_rollup AS r
            (tenant_id, connection_id, interface_id, direction, hour, state, shard, entered,
             age_ms_sum)
        SELECT %(tenant)s, connection_id, interface_id, direction,
               date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', %(to)s, """
        + _SHARD_SQL
        + """, count(*),
               sum(greatest(extract(epoch FROM now() - created_at) * 1000, 0))::bigint
        FROM moved GROUP BY connection_id, interface_id, direction
        ON CONFLICT (tenant_id, connection_id, interface_id, direction, hour, state, shard)
        DO UPDATE SET entered = r.entered + EXCLUDED.entered,
                      age_ms_sum = r.age_ms_sum + EXCLUDED.age_ms_sum
    ), rejected AS (
        INSERT INTO messaging_code_rollup AS k
            (tenant_id, connection_id, interface_id, direction, hour, kind, stage, code, shard,
             count)
        SELECT %(tenant)s, connection_id, interface_id, direction,
               date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', 'rejection', '',
               %(rejection_code)s, """
        + _SHARD_SQL
        + """, count(*)
        FROM moved WHERE %(to)s = 'rejected'
        GROUP BY connection_id, interface_id, direction
        ON CONFLICT (tenant_id, connection_id, interface_id, direction, hour, kind, stage, code,
                     shard)
        DO UPDATE SET count = k.count + EXCLUDED.count
    ), counted AS (
        INSERT INTO messaging_state_count AS c
            (tenant_id, connection_id, interface_id, direction, state, shard, count)
        SELECT %(tenant)s, connection_id, interface_id, direction, s.state, """
        + _SHARD_SQL
        + """, sum(s.delta)
        FROM moved CROSS JOIN (VALUES (%(to)s, 1), (%(from)s, -1)) AS s(state, delta)
        GROUP BY connection_id, interface_id, direction, s.state
        ON CONFLICT (tenant_id, connection_id, interface_id, direction, state, shard)
        DO UPDATE SET count = c.count + EXCLUDED.count
    )
    SELECT id FROM moved"""
    )
    params: dict[str, Any] = {
        "tenant": str(tenant_id),
        "ids": list(message_ids),
        "from": from_state,
        "to": to_state,
        "actor": actor[:150],
        "reason": reason[:500],
        "detail": Jsonb(detail) if detail is not None else None,
        "error": error,
        "reset": reset_attempts,
        "directions": allowed,
        "rejection_code": rejection_code(detail),
        "tx_for": list((transaction_ids or {}).keys()),
        "txs": list((transaction_ids or {}).values()),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return sorted(int(row[0]) for row in cursor.fetchall())


def rejection_code(detail: dict[str, Any] | None) -> str:
    """The code a rejection is counted under: the DIP's status code (``RCP...``/``MSG...``) or a
    business response's (``R``, ``L``) as ``BR-R``; ``unknown`` when the detail names none."""
    detail = detail or {}
    if detail.get("code"):
        return str(detail["code"])[:40]
    if detail.get("response_code"):
        return f"BR-{detail['response_code']}"[:40]
    return "unknown"


@dataclass(frozen=True)
class Claimed:
    id: int
    attempts: int  # including this claim


def claim_due(
    *,
    tenant_id: UUID | str,
    direction: str,
    state: str,
    limit: int,
    lease_seconds: float,
    message_ids: Sequence[int] | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` of this tenant's messages in ``state`` that are due, oldest first
    (by id, which is creation order).

    Due: no retry scheduled in the future and no live lease. Rows another worker holds are skipped
    (SKIP LOCKED), so concurrent claimers never take one message twice. The attempt counter goes up
    with every claim, which is how a message that kills its worker is recognised and parked.
    Fairness across tenants comes from the callers taking turns (one claim per tenant per round).
    """
    # Named messages are found by their key, with the state only a guard (as in transition).
    if message_ids is not None:
        which = "id = ANY(%(ids)s) AND (direction = %(direction)s AND state = %(state)s) IS TRUE"
    else:
        which = "direction = %(direction)s AND state = %(state)s"
    # The candidates are picked once, in a MATERIALIZED CTE: as an IN subquery the planner may
    # rescan it per updated row, and with SKIP LOCKED each rescan takes the next due rows, so one
    # claim could lease far more than ``limit``.
    sql = f"""
    WITH picked AS MATERIALIZED (
        SELECT id FROM messaging_message
        WHERE tenant_id = %(tenant)s AND {which}
          AND coalesce(next_attempt_at, '-infinity') <= now()
          AND coalesce(lease_until, '-infinity') < now()
        ORDER BY id
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    )
    UPDATE messaging_message m
    SET lease_until = now() + make_interval(secs => %(lease)s), attempts = m.attempts + 1
    FROM picked
    WHERE m.tenant_id = %(tenant)s AND m.id = picked.id
    RETURNING m.id, m.attempts
    """
    params: dict[str, Any] = {
        "tenant": str(tenant_id),
        "direction": direction,
        "state": state,
        "lease": float(lease_seconds),
        "limit": limit,
        "ids": list(message_ids or []),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = sorted(cursor.fetchall(), key=lambda row: row[0])
    return [Claimed(id=int(r[0]), attempts=int(r[1])) for r in rows]


def release(*, tenant_id: UUID | str, message_ids: Sequence[int]) -> int:
    """Give leases back without moving the messages (they are due again at once)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE messaging_message SET lease_until = NULL"
            " WHERE tenant_id = %s AND id = ANY(%s) AND lease_until IS NOT NULL",
            [str(tenant_id), list(message_ids)],
        )
        return cursor.rowcount


def backoff_delay(
    attempt: int, *, base: float = 2.0, cap: float = 900.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return (rng or random).uniform(0, ceiling)


def schedule_retry(
    *,
    tenant_id: UUID | str,
    message_ids: Sequence[int],
    delay_seconds: float,
    error: str,
    retry_after: float | None = None,
) -> datetime | None:
    """Release the leases and make the messages due again after the delay (never sooner than a
    ``Retry-After`` the other side asked for). The sweeper picks them up then; nothing waits in
    the broker. Returns the new due time (None when no message was given)."""
    if not message_ids:
        return None
    delay = max(delay_seconds, retry_after or 0.0)
    sql = (
        """
    WITH retried AS (
        UPDATE messaging_message SET lease_until = NULL,
            next_attempt_at = now() + make_interval(secs => %(delay)s), last_error = %(error)s
        WHERE tenant_id = %(tenant)s AND id = ANY(%(ids)s)
        RETURNING next_attempt_at, connection_id, interface_id, direction, state
    ), rolled AS (
        INSERT INTO messaging_flow_rollup AS r
            (tenant_id, connection_id, interface_id, direction, hour, state, shard, retried)
        SELECT %(tenant)s, connection_id, interface_id, direction,
               date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', state, """
        + _SHARD_SQL
        + """, count(*)
        FROM retried GROUP BY connection_id, interface_id, direction, state
        ON CONFLICT (tenant_id, connection_id, interface_id, direction, hour, state, shard)
        DO UPDATE SET retried = r.retried + EXCLUDED.retried
    )
    SELECT max(next_attempt_at) FROM retried"""
    )
    params: dict[str, Any] = {
        "delay": float(delay),
        "error": error[:2000],
        "tenant": str(tenant_id),
        "ids": list(message_ids),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


# --- findings --------------------------------------------------------------------------------


class FindingLike(Protocol):
    stage: str
    severity: str
    code: str
    path: str
    text: str
    rule: str


def record_findings(
    *,
    tenant_id: UUID | str,
    findings: Iterable[tuple[int, FindingLike]],
    registry_version: str = "",
) -> int:
    """Append one validation run's findings: (message id, finding) pairs, in one statement."""
    rows = list(findings)
    if not rows:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            WITH recorded AS (
                INSERT INTO messaging_finding (tenant_id, message_id, registry_version, stage,
                                               severity, code, path, text, rule)
                SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[],
                                         %s::text[], %s::text[], %s::text[], %s::text[])
                RETURNING tenant_id, message_id, stage, severity, code
            ), failed AS (
                SELECT m.connection_id, m.interface_id, m.direction, f.stage, f.code
                FROM recorded f JOIN messaging_message m
                  ON m.tenant_id = f.tenant_id AND m.id = f.message_id
                WHERE f.severity IN ('error', 'fatal')
            ), rolled AS (
                INSERT INTO messaging_code_rollup AS k
                    (tenant_id, connection_id, interface_id, direction, hour, kind, stage, code,
                     shard, count)
                SELECT %s, connection_id, interface_id, direction,
                       date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                       'finding', stage, code, """
            + _SHARD_SQL
            + """, count(*)
                FROM failed GROUP BY connection_id, interface_id, direction, stage, code
                ON CONFLICT (tenant_id, connection_id, interface_id, direction, hour, kind, stage,
                             code, shard)
                DO UPDATE SET count = k.count + EXCLUDED.count
            )
            SELECT count(*) FROM recorded
            """,
            [
                str(tenant_id),
                [mid for mid, _ in rows],
                [registry_version[:40]] * len(rows),
                [f.stage[:12] for _, f in rows],
                [f.severity for _, f in rows],
                [f.code[:40] for _, f in rows],
                [f.path[:300] for _, f in rows],
                [f.text[:1000] for _, f in rows],
                [f.rule[:80] for _, f in rows],
                str(tenant_id),
            ],
        )
        return int(cursor.fetchone()[0])


# --- partitions ------------------------------------------------------------------------------


def ensure_partitions(*, months_ahead: int = 3) -> int:
    """Create the store's monthly partitions up to ``months_ahead`` months from now (idempotent);
    returns how many were created."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT busbar_ensure_partitions(%s)", [months_ahead])
        return int(cursor.fetchone()[0])


def note_on_timeline(
    *,
    tenant_id: UUID | str,
    message_ids: Sequence[int],
    actor: str,
    reason: str,
    detail: dict[str, Any] | None = None,
) -> int:
    """Append a timeline row that moves nothing (``from_state = to_state``, the message's current
    state): what a person did about the message (assigned, commented, replayed). Returns how
    many messages got the note; ids that name no message of the tenant are skipped."""
    if not message_ids:
        return 0
    params: dict[str, Any] = {
        "tenant": str(tenant_id),
        "ids": list(message_ids),
        "actor": actor[:150],
        "reason": reason[:500],
        "detail": Jsonb(detail) if detail is not None else None,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO messaging_transition (tenant_id, message_id, from_state, to_state, actor,
                                              reason, detail)
            SELECT tenant_id, id, state, state, %(actor)s, %(reason)s, %(detail)s
            FROM messaging_message WHERE tenant_id = %(tenant)s AND id = ANY(%(ids)s)
            """,
            params,
        )
        return cursor.rowcount
