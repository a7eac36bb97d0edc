"""Maintenance tasks that belong to no app."""

from __future__ import annotations

import time

from celery import shared_task
from django.core.cache import cache

HEARTBEAT_KEY = "busbar:beat-heartbeat"


@shared_task
def record_heartbeat_task() -> float:
    """Beat sends this every 30 s; a worker stamping it proves beat, broker and workers all run."""
    now = time.time()
    cache.set(HEARTBEAT_KEY, now, timeout=3600)
    return now
