"""A cheap gauge of the unprocessed inbound backlog, for the webhook's back-pressure.

The gauge is the length of the ``inbound`` Celery queue (deliveries stored and waiting for a
worker), read at most once a second in a background thread, so the webhook never waits on Redis:
when Redis cannot be read the last figure stands (and a lost figure never refuses traffic: the
database, not the broker, is the truth about what is stored).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from django.conf import settings
from prometheus_client import Gauge

from core.celery import app

logger = logging.getLogger(__name__)

QUEUE = "inbound"
REFRESH_SECONDS = 1.0

BACKLOG = Gauge(
    "busbar_inbound_backlog_deliveries",
    "Stored deliveries waiting for an inbound worker (the inbound queue's length).",
)

_state = {"value": 0, "read_at": 0.0, "refreshing": False}
_lock = threading.Lock()
# One broker connection kept for the gauge: opening one per reading resolved the transport and
# built a connection pool every second, a tenth of a busy ingest server's CPU.
_broker: dict[str, Any] = {"connection": None, "client": None}
_broker_lock = threading.Lock()


def read_backlog() -> int:
    """The inbound queue's length now (a Redis LLEN; raises when Redis does not answer)."""
    with _broker_lock:
        if _broker["client"] is None:
            connection = app.connection_for_read()
            _broker.update(connection=connection, client=connection.default_channel.client)
        try:
            return int(_broker["client"].llen(QUEUE))
        except Exception:
            # Broken or gone: the next reading opens a new connection.
            connection = _broker["connection"]
            _broker.update(connection=None, client=None)
            with contextlib.suppress(Exception):
                connection.release()
            raise


def _refresh() -> None:
    try:
        value = read_backlog()
    except Exception as exc:  # a gauge that cannot be read must not shed traffic
        logger.warning("inbound.backlog_unreadable", extra={"error": str(exc)[:200]})
        value = int(_state["value"])
    with _lock:
        _state.update(value=value, read_at=time.monotonic(), refreshing=False)
    BACKLOG.set(value)


def too_deep() -> bool:
    """Whether the backlog is above ``BUSBAR_INGEST_BACKLOG_LIMIT`` (as last read); starts a
    background refresh when the figure is older than a second."""
    with _lock:
        stale = time.monotonic() - float(_state["read_at"]) > REFRESH_SECONDS
        if stale and not _state["refreshing"]:
            _state["refreshing"] = True
            threading.Thread(target=_refresh, name="ingest-backlog", daemon=True).start()
        return int(_state["value"]) > settings.BUSBAR_INGEST_BACKLOG_LIMIT


def set_for_tests(value: int) -> None:
    """Pin the gauge (and stop it refreshing for a while): tests of the shedding path."""
    with _lock:
        _state.update(value=value, read_at=time.monotonic() + 3600, refreshing=False)
