"""dipsim's durable state: one SQLite database (WAL) under the data folder.

Everything that must survive a restart lives here: the participant registry (DIP IDs, roles, API
keys, DCPs), the MPAN registry, routing configuration, webhooks, accepted messages (the egress
payload, zlib-compressed), deliveries with their retry state, status messages, faults, counters
and an event log. The CLI writes to the same database while ``serve`` runs; the server notices
through SQLite's ``data_version`` and reloads its registry caches.

One connection per process, used from the event-loop thread only: every statement is short
and batches are written in one transaction, which is faster than handing work to threads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    dip_id TEXT PRIMARY KEY,
    mpid TEXT NOT NULL,
    role TEXT NOT NULL,
    api_key TEXT UNIQUE,
    dcp_id TEXT,
    env TEXT NOT NULL DEFAULT 'UIT',
    kind TEXT NOT NULL DEFAULT 'participant',
    simulated TEXT,
    name TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mpans (
    mpan TEXT PRIMARY KEY,
    gsp TEXT NOT NULL,
    distributor TEXT NOT NULL,
    parties TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS routes (
    interface TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (interface, kind, value)
);
CREATE TABLE IF NOT EXISTS webhooks (
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    url TEXT NOT NULL,
    max_count INTEGER,
    max_kb INTEGER,
    updated_at REAL NOT NULL,
    PRIMARY KEY (channel, recipient)
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    txn TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    event_code TEXT NOT NULL,
    schema_version TEXT,
    sender TEXT NOT NULL,
    sur TEXT NOT NULL UNIQUE,
    mpan TEXT,
    correlation TEXT,
    received_at REAL NOT NULL,
    recipients TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_channel_time ON messages (channel, received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    ref INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    replay INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_at);
CREATE INDEX IF NOT EXISTS deliveries_batch ON deliveries (recipient, channel, state, id);
CREATE INDEX IF NOT EXISTS deliveries_next ON deliveries (recipient, channel, state, next_at);
CREATE INDEX IF NOT EXISTS deliveries_ref ON deliveries (kind, ref);
CREATE TABLE IF NOT EXISTS status_messages (
    id INTEGER PRIMARY KEY,
    from_id TEXT NOT NULL,
    to_id TEXT NOT NULL,
    txn TEXT,
    body TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Participant:
    """A registered DIP ID: a market participant in one role, or a DCP (``kind == "dcp"``)."""

    dip_id: str
    mpid: str
    role: str
    api_key: str | None
    dcp_id: str | None
    env: str
    kind: str
    simulated: str | None
    name: str | None


@dataclass
class Registry:
    """An in-memory snapshot of the participant registry and routing configuration."""

    participants: dict[str, Participant] = field(default_factory=dict)
    by_api_key: dict[str, Participant] = field(default_factory=dict)
    always: dict[str, list[str]] = field(default_factory=dict)
    secondary_roles: dict[str, list[str]] = field(default_factory=dict)


def _pack(payload_json: bytes) -> bytes:
    return zlib.compress(payload_json, 1)


def unpack(blob: bytes) -> bytes:
    return zlib.decompress(blob)


class Store:
    """The SQLite database of one dipsim instance (see module docstring)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "dipsim.sqlite3"
        # The database holds participants' API keys in clear: owner-only, from the first byte.
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        for path in (self.path, *(Path(f"{self.path}{suffix}") for suffix in ("-wal", "-shm"))):
            if path.exists():
                path.chmod(0o600)
        self.db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only an OS crash can lose the last commits.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.execute("DROP INDEX IF EXISTS deliveries_target")
        self._lock = threading.RLock()
        self._registry: Registry | None = None
        self._registry_version: int | None = None
        self._registry_checked = 0.0

    def close(self) -> None:
        self.db.close()

    # ---- transactions -------------------------------------------------------------------------

    def write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self.db.execute(sql, params)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.db.execute(sql, params).fetchall()

    # ---- registry -------------------------------------------------------------------------------

    def upsert_participant(
        self,
        *,
        dip_id: str,
        mpid: str,
        role: str,
        api_key: str | None,
        dcp_id: str | None = None,
        env: str = "UIT",
        kind: str = "participant",
        simulated: str | None = None,
        name: str | None = None,
    ) -> None:
        """Register or update a DIP ID (idempotent)."""
        if len(dip_id) != 10:
            raise ValueError("a DIP ID has 10 characters")
        self.write(
            [
                (
                    "INSERT INTO participants (dip_id, mpid, role, api_key, dcp_id, env, kind, simulated, name, created_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (dip_id) DO UPDATE SET mpid=excluded.mpid,"
                    " role=excluded.role, api_key=excluded.api_key, dcp_id=excluded.dcp_id, env=excluded.env,"
                    " kind=excluded.kind, simulated=excluded.simulated, name=excluded.name",
                    (dip_id, mpid, role, api_key, dcp_id, env, kind, simulated, name, time.time()),
                )
            ]
        )
        self.invalidate()

    def remove_participant(self, dip_id: str) -> None:
        self.write([("DELETE FROM participants WHERE dip_id = ?", (dip_id,))])
        self.invalidate()

    def add_mpan(self, *, mpan: str, gsp: str, distributor: str, parties: dict[str, str]) -> None:
        """Register an MPAN with the DIP IDs appointed to it by role (``{"SUP": "1000000001"}``)."""
        self.write(
            [
                (
                    "INSERT INTO mpans (mpan, gsp, distributor, parties) VALUES (?,?,?,?)"
                    " ON CONFLICT (mpan) DO UPDATE SET gsp=excluded.gsp, distributor=excluded.distributor,"
                    " parties=excluded.parties",
                    (mpan, gsp, distributor, json.dumps(parties, sort_keys=True)),
                )
            ]
        )

    def add_mpans(self, rows: Iterable[tuple[str, str, str, dict[str, str]]]) -> None:
        self.write(
            (
                "INSERT OR REPLACE INTO mpans (mpan, gsp, distributor, parties) VALUES (?,?,?,?)",
                (mpan, gsp, distributor, json.dumps(parties, sort_keys=True)),
            )
            for mpan, gsp, distributor, parties in rows
        )

    def mpan(self, mpan: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM mpans WHERE mpan = ?", (mpan,))
        if not rows:
            return None
        row = rows[0]
        return {
            "mpan": row["mpan"],
            "gsp": row["gsp"],
            "distributor": row["distributor"],
            "parties": json.loads(row["parties"]),
        }

    def mpans_for(self, role: str, dip_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT * FROM mpans WHERE json_extract(parties, ?) = ? LIMIT ?",
            (f"$.{role}", dip_id, limit),
        )
        return [
            {
                "mpan": r["mpan"],
                "gsp": r["gsp"],
                "distributor": r["distributor"],
                "parties": json.loads(r["parties"]),
            }
            for r in rows
        ]

    def set_route(self, interface_id: str, kind: str, values: list[str]) -> None:
        """Replace the ``always`` recipients or ``secondary`` roles configured for an interface."""
        if kind not in {"always", "secondary"}:
            raise ValueError("route kind is 'always' or 'secondary'")
        self.write(
            [
                ("DELETE FROM routes WHERE interface = ? AND kind = ?", (interface_id, kind)),
                *[
                    ("INSERT INTO routes VALUES (?,?,?)", (interface_id, kind, value))
                    for value in values
                ],
            ]
        )
        self.invalidate()

    def data_version(self) -> int:
        with self._lock:
            return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def registry(self, max_age: float = 0.5) -> Registry:
        """Return the registry snapshot, reloaded when another connection has changed the database.

        ``data_version`` only moves on other connections' commits, so our own writes through
        :meth:`upsert_participant` call :meth:`invalidate`.
        """
        now = time.monotonic()
        if self._registry is not None and now - self._registry_checked < max_age:
            return self._registry
        version = self.data_version()
        self._registry_checked = now
        if self._registry is not None and version == self._registry_version:
            return self._registry
        registry = Registry()
        for row in self.query("SELECT * FROM participants"):
            participant = Participant(
                dip_id=row["dip_id"],
                mpid=row["mpid"],
                role=row["role"],
                api_key=row["api_key"],
                dcp_id=row["dcp_id"],
                env=row["env"],
                kind=row["kind"],
                simulated=row["simulated"],
                name=row["name"],
            )
            registry.participants[participant.dip_id] = participant
            if participant.api_key:
                registry.by_api_key[participant.api_key] = participant
        for row in self.query("SELECT interface, kind, value FROM routes ORDER BY rowid"):
            target = registry.always if row["kind"] == "always" else registry.secondary_roles
            target.setdefault(row["interface"], []).append(row["value"])
        self._registry = registry
        self._registry_version = version
        return registry

    def invalidate(self) -> None:
        self._registry = None

    # ---- settings -------------------------------------------------------------------------------

    def get_setting(self, name: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM settings WHERE name = ?", (name,))
        return json.loads(rows[0]["value"]) if rows else default

    def set_setting(self, name: str, value: Any) -> None:
        self.write([("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, json.dumps(value)))])

    # ---- webhooks -------------------------------------------------------------------------------

    def set_webhook(
        self, channel: str, recipient: str, url: str, max_count: int | None, max_kb: int | None
    ) -> int:
        """Register a webhook; deliveries that were waiting for one become due. Returns how many."""
        now = time.time()
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute(
                    "INSERT OR REPLACE INTO webhooks VALUES (?,?,?,?,?,?)",
                    (channel, recipient, url, max_count, max_kb, now),
                )
                woken = self.db.execute(
                    "UPDATE deliveries SET state='pending', next_at=?, updated_at=? WHERE recipient=? AND channel=? AND state='waiting'",
                    (now, now, recipient, channel),
                ).rowcount
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return woken

    def delete_webhook(self, channel: str, recipient: str) -> bool:
        with self._lock:
            return (
                self.db.execute(
                    "DELETE FROM webhooks WHERE channel=? AND recipient=?", (channel, recipient)
                ).rowcount
                > 0
            )

    def webhook(self, channel: str, recipient: str) -> sqlite3.Row | None:
        rows = self.query(
            "SELECT * FROM webhooks WHERE channel=? AND recipient=?", (channel, recipient)
        )
        return rows[0] if rows else None

    def webhooks(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM webhooks ORDER BY recipient, channel")

    # ---- messages -------------------------------------------------------------------------------

    def sur_exists(self, surs: Sequence[str]) -> set[str]:
        if not surs:
            return set()
        found: set[str] = set()
        # SQLite limits host parameters per statement; 500 is far below every build's limit.
        for start in range(0, len(surs), 500):
            chunk = surs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self.query(f"SELECT sur FROM messages WHERE sur IN ({marks})", chunk)
            )
        return found

    def insert_messages(
        self, rows: list[dict[str, Any]], delivery_state: dict[tuple[str, str], str]
    ) -> None:
        """Insert accepted messages and one delivery per recipient, in one transaction.

        Each row has ``txn, channel, event_code, schema_version, sender, sur, mpan, correlation,
        received_at, recipients (list), body (egress payload JSON bytes)``. ``delivery_state``
        maps ``(recipient, channel)`` to the initial state (``pending`` or ``waiting``).
        """
        now = time.time()
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cursor = self.db.execute(
                        "INSERT INTO messages (txn, channel, event_code, schema_version, sender, sur, mpan, correlation,"
                        " received_at, recipients, body) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            row["txn"],
                            row["channel"],
                            row["event_code"],
                            row["schema_version"],
                            row["sender"],
                            row["sur"],
                            row["mpan"],
                            row["correlation"],
                            row["received_at"],
                            json.dumps(row["recipients"]),
                            _pack(row["body"]),
                        ),
                    )
                    seq = cursor.lastrowid
                    row["seq"] = seq
                    self.db.executemany(
                        "INSERT INTO deliveries (kind, ref, recipient, channel, state, next_at, created_at, updated_at)"
                        " VALUES ('message', ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                seq,
                                recipient,
                                row["channel"],
                                delivery_state[(recipient, row["channel"])],
                                now,
                                now,
                                now,
                            )
                            for recipient in row["recipients"]
                        ],
                    )
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def message_bodies(self, seqs: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for start in range(0, len(seqs), 500):
            chunk = list(seqs[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self.query(f"SELECT seq, body FROM messages WHERE seq IN ({marks})", chunk):
                out[row["seq"]] = unpack(row["body"])
        return out

    def find_messages(
        self,
        *,
        channel: str | None = None,
        recipient: str | None = None,
        sender: str | None = None,
        since: float | None = None,
        until: float | None = None,
        event_code: str | None = None,
        mpan: str | None = None,
        version: str | None = None,
        txns: Sequence[str] | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[sqlite3.Row]:
        """Select messages by the filters that ``/replay`` and the admin message log offer."""
        clauses: list[str] = []
        params: list[Any] = []
        if channel:
            clauses.append("channel = ?")
            params.append(channel)
        if recipient:
            clauses.append("EXISTS (SELECT 1 FROM json_each(messages.recipients) WHERE value = ?)")
            params.append(recipient)
        if sender:
            clauses.append("sender = ?")
            params.append(sender)
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("received_at <= ?")
            params.append(until)
        if event_code:
            clauses.append("event_code = ?")
            params.append(event_code)
        if mpan:
            clauses.append("mpan = ?")
            params.append(mpan)
        if version:
            clauses.append("schema_version = ?")
            params.append(version)
        if txns:
            clauses.append(f"txn IN ({','.join('?' * len(txns))})")
            params.extend(txns)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        order = "DESC" if newest_first else "ASC"
        return self.query(
            f"SELECT * FROM messages{where} ORDER BY seq {order} LIMIT ?", [*params, limit]
        )

    def message_by_txn(self, txn: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM messages WHERE txn = ?", (txn,))
        return rows[0] if rows else None

    # ---- deliveries -----------------------------------------------------------------------------

    def add_deliveries(self, rows: Iterable[tuple[str, int, str, str, str, int]]) -> None:
        """Insert deliveries ``(kind, ref, recipient, channel, state, replay)`` due now."""
        now = time.time()
        self.write(
            (
                "INSERT INTO deliveries (kind, ref, recipient, channel, state, next_at, replay, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (kind, ref, recipient, channel, state, now, replay, now, now),
            )
            for kind, ref, recipient, channel, state, replay in rows
        )

    def pending_targets(self) -> set[tuple[str, str]]:
        """Every (recipient, channel) with pending deliveries (a full scan: used at start-up)."""
        rows = self.query(
            "SELECT DISTINCT recipient, channel FROM deliveries WHERE state='pending'"
        )
        return {(r["recipient"], r["channel"]) for r in rows}

    def target_next_due(self, recipient: str, channel: str) -> float | None:
        """When the earliest pending delivery of a target is due, or None when it has none."""
        rows = self.query(
            "SELECT MIN(next_at) AS due FROM deliveries WHERE recipient=? AND channel=? AND state='pending'",
            (recipient, channel),
        )
        return rows[0]["due"] if rows else None

    def due_deliveries(
        self, recipient: str, channel: str, now: float, limit: int
    ) -> list[sqlite3.Row]:
        return self.query(
            "SELECT * FROM deliveries WHERE recipient=? AND channel=? AND state='pending' AND next_at <= ?"
            " ORDER BY id LIMIT ?",
            (recipient, channel, now, limit),
        )

    def update_deliveries(
        self, updates: list[tuple[str, int, float, int | None, str | None, int]]
    ) -> None:
        """Apply ``(state, attempts, next_at, last_status, last_error, id)`` to deliveries."""
        now = time.time()
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "UPDATE deliveries SET state=?, attempts=?, next_at=?, last_status=?, last_error=?, updated_at=?"
                    " WHERE id=?",
                    [(s, a, n, st, err, now, i) for s, a, n, st, err, i in updates],
                )
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def deliveries_for(self, kind: str, ref: int) -> list[sqlite3.Row]:
        return self.query(
            "SELECT * FROM deliveries WHERE kind=? AND ref=? ORDER BY id", (kind, ref)
        )

    def list_deliveries(
        self, state: str | None = None, recipient: str | None = None, limit: int = 200
    ) -> list[sqlite3.Row]:
        clauses, params = [], []
        if state:
            clauses.append("state = ?")
            params.append(state)
        if recipient:
            clauses.append("recipient = ?")
            params.append(recipient)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return self.query(
            f"SELECT * FROM deliveries{where} ORDER BY id DESC LIMIT ?", [*params, limit]
        )

    def delivery_counts(self) -> dict[str, int]:
        return {
            r["state"]: r["n"]
            for r in self.query("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
        }

    # ---- status messages ------------------------------------------------------------------------

    def insert_status(self, rows: list[tuple[str, str, str | None, str]]) -> list[int]:
        """Insert status messages ``(from, to, txn, body json)`` and return their ids."""
        now = time.time()
        ids: list[int] = []
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for from_id, to_id, txn, body in rows:
                    cursor = self.db.execute(
                        "INSERT INTO status_messages (from_id, to_id, txn, body, received_at) VALUES (?,?,?,?,?)",
                        (from_id, to_id, txn, body, now),
                    )
                    ids.append(int(cursor.lastrowid or 0))
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return ids

    def status_bodies(self, ids: Sequence[int]) -> dict[int, bytes]:
        marks = ",".join("?" * len(ids))
        return {
            r["id"]: r["body"].encode()
            for r in self.query(
                f"SELECT id, body FROM status_messages WHERE id IN ({marks})", list(ids)
            )
        }

    # ---- faults, counters, events ---------------------------------------------------------------

    def faults(self) -> list[tuple[int, dict[str, Any]]]:
        return [
            (r["id"], json.loads(r["spec"]))
            for r in self.query("SELECT id, spec FROM faults ORDER BY id")
        ]

    def add_fault(self, spec: dict[str, Any]) -> int:
        with self._lock:
            cursor = self.db.execute(
                "INSERT INTO faults (spec, created_at) VALUES (?, ?)",
                (json.dumps(spec), time.time()),
            )
            return int(cursor.lastrowid or 0)

    def update_fault(self, fault_id: int, spec: dict[str, Any]) -> None:
        with self._lock:
            self.db.execute("UPDATE faults SET spec=? WHERE id=?", (json.dumps(spec), fault_id))

    def delete_fault(self, fault_id: int | None = None) -> int:
        with self._lock:
            if fault_id is None:
                return self.db.execute("DELETE FROM faults").rowcount
            return self.db.execute("DELETE FROM faults WHERE id=?", (fault_id,)).rowcount

    def load_counters(self) -> dict[str, int]:
        return {r["name"]: r["value"] for r in self.query("SELECT name, value FROM counters")}

    def save_counters(self, counters: dict[str, int]) -> None:
        self.write(
            ("INSERT OR REPLACE INTO counters VALUES (?, ?)", (k, v)) for k, v in counters.items()
        )

    def log_event(self, kind: str, detail: dict[str, Any]) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO events (at, kind, detail) VALUES (?,?,?)",
                (time.time(), kind, json.dumps(detail)),
            )

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        return [
            {"id": r["id"], "at": r["at"], "kind": r["kind"], "detail": json.loads(r["detail"])}
            for r in self.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        ]

    def prune(self, older_than: float) -> int:
        """Delete messages received before ``older_than`` that have nothing left to deliver."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                doomed = [
                    r[0]
                    for r in self.db.execute(
                        "SELECT seq FROM messages WHERE received_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries d"
                        " WHERE d.kind='message' AND d.ref=messages.seq AND d.state IN ('pending','waiting'))",
                        (older_than,),
                    )
                ]
                for start in range(0, len(doomed), 500):
                    chunk = doomed[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    self.db.execute(
                        f"DELETE FROM deliveries WHERE kind='message' AND ref IN ({marks})", chunk
                    )
                    self.db.execute(f"DELETE FROM messages WHERE seq IN ({marks})", chunk)
                self.db.execute("DELETE FROM events WHERE at < ?", (older_than,))
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return len(doomed)
