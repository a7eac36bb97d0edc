"""``python -m sampleclient --port 8701 --secret whsec_...`` (or ``--secret-file``)."""

from __future__ import annotations

import argparse
import html
import json
import socket
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

MAX_BODY = 5 * 1024 * 1024
# Busbar sends an endpoint that takes batches {"type": "event.batch", "data": {"events": [...]}}.
BATCH_TYPE = "event.batch"

SCHEMA = """
CREATE TABLE IF NOT EXISTS received (
    webhook_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    subject TEXT,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Store:
    """What arrived, once per webhook-id, and how many duplicates and refusals there were."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A demo receiver: survive a crash of itself, not of the machine, and keep up with Busbar.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def bump(self, name: str) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (name,),
            )

    def add(self, webhook_id: str, event: dict[str, Any], body: str) -> bool:
        """True when this webhook-id is new; a redelivery changes nothing."""
        return self.add_many([(webhook_id, event, body)]) == 1

    def add_many(self, events: list[tuple[str, dict[str, Any], str]]) -> int:
        """Store (event id, event, body) in one transaction, each id once; return how many were
        new (the rest were redeliveries)."""
        now = time.time()
        with self.lock:
            before = self.db.total_changes
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO received VALUES (?, ?, ?, ?, ?)",
                [(i, str(e.get("type")), e.get("subject"), now, b) for i, e, b in events],
            )
            self.db.execute("COMMIT")
            return self.db.total_changes - before

    def bump_by(self, name: str, count: int) -> None:
        if count:
            with self.lock:
                self.db.execute(
                    "INSERT INTO counters VALUES (?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (name, count),
                )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            by_type = dict(
                self.db.execute("SELECT type, count(*) FROM received GROUP BY type ORDER BY type")
            )
            counters = dict(self.db.execute("SELECT name, value FROM counters"))
            latest = [
                {"id": r[0], "type": r[1], "subject": r[2], "received_at": r[3]}
                for r in self.db.execute(
                    "SELECT webhook_id, type, subject, received_at FROM received"
                    " ORDER BY received_at DESC LIMIT 10"
                )
            ]
        return {
            "received": sum(by_type.values()),
            "by_type": by_type,
            "duplicates": counters.get("duplicates", 0),
            "refused": counters.get("refused", 0),
            "latest": latest,
        }


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{name}</title>
<meta http-equiv="refresh" content="5"><style>body{{font:14px system-ui;margin:2em}}
td,th{{padding:.2em .8em;text-align:left}}</style></head><body>
<h1>{name}: events received from Busbar</h1>
<p>{received} events (each verified with standardwebhooks), {duplicates} redeliveries ignored,
{refused} refused for a bad signature.</p>
<table><tr><th>type</th><th>count</th></tr>{rows}</table>
<h2>Latest</h2><table><tr><th>id</th><th>type</th><th>subject</th></tr>{latest}</table>
</body></html>"""


def make_handler(store: Store, verifiers: list[Webhook], name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sampleclient/1"
        protocol_version = "HTTP/1.1"  # keep-alive: Busbar's pooled client reuses connections

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, Nagle's algorithm holds the
            # second until the client's delayed ACK, about 40 ms per request.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True  # the unread body would be taken for a request
                self._send(413, b'{"error": "too large"}')
                return
            body = self.rfile.read(length)
            headers = dict(self.headers.items())
            event = None
            for verifier in verifiers:
                try:
                    event = verifier.verify(body, headers)
                    break
                except WebhookVerificationError:
                    continue
            if event is None:
                store.bump("refused")
                self._send(400, b'{"error": "signature did not verify"}')
                return
            if isinstance(event, dict) and event.get("type") == BATCH_TYPE:
                # Several events in one signed request: each is deduplicated on its own id.
                events = event.get("data", {}).get("events", [])
                # orjson: this process shares the cores with Busbar in the end-to-end benchmark,
                # and json.dumps took 30 us per IF-021 consumption event against orjson's 2.3.
                items = [(e["id"], e, orjson.dumps(e).decode()) for e in events]
            else:
                items = [(self.headers["webhook-id"], event, body.decode())]
            new = store.add_many(items)
            store.bump_by("duplicates", len(items) - new)
            self._send(200, b'{"ok": true}')

        def do_GET(self) -> None:
            stats = store.stats()
            if self.path.startswith("/stats.json"):
                self._send(200, json.dumps(stats).encode())
                return
            rows = "".join(
                f"<tr><td>{html.escape(t)}</td><td>{n}</td></tr>"
                for t, n in stats["by_type"].items()
            )
            latest = "".join(
                f"<tr><td>{html.escape(e['id'])}</td><td>{html.escape(e['type'])}</td>"
                f"<td>{html.escape(e['subject'] or '')}</td></tr>"
                for e in stats["latest"]
            )
            page = PAGE.format(
                name=html.escape(name),
                received=stats["received"],
                duplicates=stats["duplicates"],
                refused=stats["refused"],
                rows=rows,
                latest=latest,
            )
            self._send(200, page.encode(), "text/html; charset=utf-8")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sampleclient", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", action="append", default=[], help="whsec_...; repeatable")
    parser.add_argument("--secret-file", type=Path, help="secrets, one per line")
    parser.add_argument("--name", default="sample client")
    parser.add_argument("--db", default=":memory:", help="SQLite file for what arrived")
    args = parser.parse_args(argv)
    secrets = list(args.secret)
    if args.secret_file:
        secrets += [s.strip() for s in args.secret_file.read_text().splitlines() if s.strip()]
    if not secrets:
        parser.error("give at least one --secret or a --secret-file")
    verifiers = [Webhook(secret) for secret in secrets]
    server = ThreadingHTTPServer(
        (args.host, args.port), make_handler(Store(args.db), verifiers, args.name)
    )
    print(f"sampleclient {args.name} listening on http://{args.host}:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
