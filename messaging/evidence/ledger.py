"""The per-tenant sealed ledger: entries batched into signed, chained Merkle roots.

Entries are not written on the hot path. A seal covers one time window ``[from, to)`` of a tenant's
records, read from where they already are: raw blobs and transitions (by their time-ordered ids),
DIP exchanges (by start time) and audit events (by time). The window closes
``BUSBAR_EVIDENCE_SETTLE_SECONDS`` in the past, so a transaction still open when the sealer runs is
not missed. Membership is therefore a pure function of the window: the verification job recomputes
each seal from the sources and names every entry that was changed, removed or added since.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.audit import record_event
from messaging.evidence import audit_archive, keys
from messaging.evidence.verify_pack import canonical, leaf_hash, merkle_root, seal_digest
from messaging.models import LedgerCheck, Seal, SealLeaf
from messaging.store.ids import ID_EPOCH, id_floor, id_time

logger = logging.getLogger(__name__)

LEDGER_FORMAT = "busbar-ledger/1"
GENESIS = "0" * 64
MAX_ENTRIES_PER_SEAL = 5000
SOURCES = ("raw", "transition", "exchange", "audit")


@dataclass(frozen=True)
class Entry:
    source: str
    ref: str
    at: datetime
    record: dict[str, Any]

    @property
    def leaf(self) -> bytes:
        return leaf_hash(self.record)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="microseconds") if moment else None


def _hex(value: bytes | memoryview | None) -> str | None:
    return bytes(value).hex() if value is not None else None


def entries_in_window(
    *,
    tenant_id: UUID | str,
    window_from: datetime,
    window_to: datetime,
    first: int | None = None,
) -> Iterator[Entry]:
    """Every ledger entry of the tenant in ``[window_from, window_to)``, in sealing order: by
    time, then source, then id. Runs inside the tenant's context (RLS scopes every read).

    ``first``: read at most that many raw payloads and transitions (the sources a burst fills),
    the earliest. Every entry of the window earlier than the ``first``-th of the result is then
    in it; a later one may be missing."""
    tenant = str(tenant_id)
    low, high = id_floor(window_from), id_floor(window_to)
    # ORDER BY id is time order for these two (time-ordered ids), so a LIMIT keeps a prefix.
    limit = "" if first is None else f" LIMIT {int(first)}"
    entries: list[Entry] = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, kind, direction, connection_id, channel_id, created_at, body_sha256,"
            " body_size, response_status, sha256(response_body) FROM messaging_raw"
            " WHERE tenant_id = %s AND id >= %s AND id < %s ORDER BY id" + limit,
            [tenant, low, high],
        )
        for rid, kind, direction, conn, channel, created, sha, size, status, resp in cursor:
            entries.append(
                Entry(
                    "raw",
                    str(rid),
                    id_time(rid),
                    {
                        "source": "raw",
                        "id": rid,
                        "tenant": tenant,
                        "kind": kind,
                        "direction": direction,
                        "connection": conn,
                        "channel": channel,
                        "at": _iso(created),
                        "sha256": _hex(sha),
                        "size": size,
                        "response_status": status,
                        "response_sha256": _hex(resp),
                    },
                )
            )
        cursor.execute(
            "SELECT id, message_id, at, from_state, to_state, actor, reason, detail"
            " FROM messaging_transition WHERE tenant_id = %s AND id >= %s AND id < %s ORDER BY id"
            + limit,
            [tenant, low, high],
        )
        for tid, message_id, at, from_state, to_state, actor, reason, detail in cursor:
            entries.append(
                Entry(
                    "transition",
                    str(tid),
                    id_time(tid),
                    {
                        "source": "transition",
                        "id": tid,
                        "tenant": tenant,
                        "message": message_id,
                        "at": _iso(at),
                        "from": from_state,
                        "to": to_state,
                        "actor": actor,
                        "reason": reason,
                        "detail": detail,
                    },
                )
            )
        cursor.execute(
            "SELECT id, connection_id, operation, interface_id, method, url, started_at,"
            " http_status, outcome, body_sha256, signing_certificate_fingerprint,"
            " mtls_certificate_fingerprint, sender_references, transaction_ids"
            " FROM messaging_dipexchange WHERE tenant_id = %s AND started_at >= %s"
            " AND started_at < %s ORDER BY started_at, id",
            [tenant, window_from, window_to],
        )
        for row in cursor:
            (eid, conn, op, iface, method, url, started, status, outcome, body_sha) = row[:10]
            signing, mtls, references, transactions = row[10:]
            entries.append(
                Entry(
                    "exchange",
                    str(eid),
                    started,
                    {
                        "source": "exchange",
                        "id": eid,
                        "tenant": tenant,
                        "connection": conn,
                        "operation": op,
                        "interface": iface,
                        "method": method,
                        "url": url,
                        "at": _iso(started),
                        "status": status,
                        "outcome": outcome,
                        "body_sha256": body_sha,
                        "signing_certificate": signing,
                        "mtls_certificate": mtls,
                        "sender_references": list(references or []),
                        "transaction_ids": list(transactions or []),
                    },
                )
            )
    # Audit events: the live table, and months moved to archive files (the same records).
    for source in (
        audit_archive.audit_records(tenant_id=tenant, window_from=window_from, window_to=window_to),
        audit_archive.archived_records(window_from=window_from, window_to=window_to),
    ):
        entries.extend(Entry("audit", ref, at, record) for ref, at, record in source)
    order = {source: n for n, source in enumerate(SOURCES)}
    entries.sort(key=lambda e: (e.at, order[e.source], e.ref))
    yield from entries


def _last_seal() -> Seal | None:
    return Seal.objects.order_by("-seq").first()


@transaction.atomic
def seal_tenant(*, tenant_id: UUID | str, now: datetime | None = None) -> Seal | None:
    """Seal the tenant's next settled window, if it holds any entry; returns the new seal.

    Call inside the tenant's context. Concurrent sealers of one tenant take turns (an advisory
    lock), so the chain never forks.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext('busbar-seal:' || %s))", [str(tenant_id)]
        )
    previous = _last_seal()
    window_from = previous.window_to if previous else ID_EPOCH
    window_to = (now or timezone.now()) - timedelta(seconds=settings.BUSBAR_EVIDENCE_SETTLE_SECONDS)
    if window_to <= window_from:
        return None
    # A seal holds at most MAX_ENTRIES_PER_SEAL entries, so only the window's earliest are
    # read: reading all of a backlog's window for each seal (and again for the next) made the
    # sealer's work grow with the square of a burst.
    entries = list(
        entries_in_window(
            tenant_id=tenant_id,
            window_from=window_from,
            window_to=window_to,
            first=MAX_ENTRIES_PER_SEAL + 1,
        )
    )
    if not entries:
        return None
    if len(entries) > MAX_ENTRIES_PER_SEAL:
        cut = entries[MAX_ENTRIES_PER_SEAL].at
        kept = [e for e in entries if e.at < cut]
        if kept:
            entries, window_to = kept, cut
        else:  # every entry read shares one instant: seal the whole window together
            entries = list(
                entries_in_window(tenant_id=tenant_id, window_from=window_from, window_to=window_to)
            )
    leaves = [e.leaf for e in entries]
    seq = previous.seq + 1 if previous else 1
    body: dict[str, Any] = {
        "format": LEDGER_FORMAT,
        "tenant": str(tenant_id),
        "seq": seq,
        "from": _iso(window_from),
        "to": _iso(window_to),
        "size": len(leaves),
        "root": merkle_root(leaves).hex(),
        "prev": seal_digest({"body": previous.body}) if previous else GENESIS,
        "key_id": keys.key_id(),
        "sources": {s: sum(1 for e in entries if e.source == s) for s in SOURCES},
    }
    seal = Seal.objects.create(
        seq=seq,
        window_from=window_from,
        window_to=window_to,
        size=len(leaves),
        root=body["root"],
        prev=body["prev"],
        body=body,
        signature=base64.b64encode(keys.sign(canonical(body))).decode(),
        key_id=body["key_id"],
    )
    # One statement for all of a seal's leaves, their columns bound as arrays: no model instance
    # and no bound parameter per leaf (a seal holds up to 5,000).
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO messaging_seal_leaf (tenant_id, seal_seq, idx, source, ref, leaf_hash)"
            " SELECT %s, %s, idx - 1, source, ref, leaf_hash"
            " FROM unnest(%s::text[], %s::text[], %s::bytea[]) WITH ORDINALITY"
            " AS l(source, ref, leaf_hash, idx)",
            [
                str(tenant_id),
                seq,
                [e.source for e in entries],
                [e.ref for e in entries],
                leaves,
            ],
        )
    return seal


def seal_until_current(*, tenant_id: UUID | str, max_seals: int = 50) -> int:
    """Seal window after window until the tenant is caught up (bounded); returns seals made."""
    made = 0
    while made < max_seals and seal_tenant(tenant_id=tenant_id) is not None:
        made += 1
    return made


def _verify_signature(seal: Seal) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        keys.signing_key().public_key().verify(
            base64.b64decode(seal.signature), canonical(seal.body)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_ledger(*, tenant_id: UUID | str, actor: str = "system:ledger-check") -> LedgerCheck:
    """Re-check every seal of the tenant against its sources; record the run and alert on any
    difference (a security audit event and the ``busbar_ledger_problems`` metric)."""
    problems: list[str] = []
    previous: Seal | None = None
    entries_checked = 0
    seals = list(Seal.objects.order_by("seq"))
    purged = audit_archive.purged_periods()
    for seal in seals:
        label = f"seal {seal.seq}"
        if not _verify_signature(seal):
            problems.append(f"{label}: signature does not match its body")
        expected_prev = seal_digest({"body": previous.body}) if previous else GENESIS
        if seal.body.get("prev") != expected_prev or seal.prev != expected_prev:
            problems.append(f"{label}: does not chain to the seal before it")
        if previous and seal.seq != previous.seq + 1:
            problems.append(f"{label}: follows seal {previous.seq} (a gap in the chain)")
        sealed = {
            (leaf.source, leaf.ref): bytes(leaf.leaf_hash)
            for leaf in SealLeaf.objects.filter(seal_seq=seal.seq)
        }
        try:
            current = {
                (e.source, e.ref): e.leaf
                for e in entries_in_window(
                    tenant_id=tenant_id, window_from=seal.window_from, window_to=seal.window_to
                )
            }
        except audit_archive.ArchiveError as exc:
            problems.append(f"{label}: {exc}")
            previous = seal
            continue
        # Audit entries of a month whose archive file was purged at the end of retention are
        # gone by design; their hashes stay in the seal leaves, so the root still checks.
        retired = any(start < seal.window_to and seal.window_from < end for start, end in purged)
        for key in sorted(sealed.keys() - current.keys()):
            if retired and key[0] == "audit":
                continue
            problems.append(f"{label}: {key[0]} {key[1]} was sealed and is gone")
        for key in sorted(current.keys() - sealed.keys()):
            problems.append(f"{label}: {key[0]} {key[1]} appeared after the window was sealed")
        for key in sorted(sealed.keys() & current.keys()):
            if sealed[key] != current[key]:
                problems.append(f"{label}: {key[0]} {key[1]} changed after it was sealed")
        ordered = [
            bytes(h)
            for h in SealLeaf.objects.filter(seal_seq=seal.seq)
            .order_by("idx")
            .values_list("leaf_hash", flat=True)
        ]
        if merkle_root(ordered).hex() != seal.root or seal.body.get("root") != seal.root:
            problems.append(f"{label}: its entries do not hash to its root")
        entries_checked += len(sealed)
        previous = seal
    check = LedgerCheck.objects.create(
        seals_checked=len(seals), entries_checked=entries_checked, problems=problems
    )
    if problems:
        logger.error(
            "evidence.ledger_mismatch",
            extra={"tenant": str(tenant_id), "problems": problems[:20]},
        )
        record_event(
            action="evidence.ledger_mismatch",
            actor=actor,
            category="security",
            detail={"problems": problems[:50], "count": len(problems)},
        )
    return check


def seal_hash(seal: Seal) -> str:
    """The hex SHA-256 of a seal's signed body (what its successor names as ``prev``)."""
    return hashlib.sha256(canonical(seal.body)).hexdigest()
