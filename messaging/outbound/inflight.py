"""Several DIP requests of one connection in flight at once, without breaking business-key order.

A request to the DIP spends most of its time waiting for the answer; a drain that sends one
batch after another leaves the worker idle for that wait. The drain therefore splits each chunk
into batches that may travel together (:func:`partition_batches`: every message of a business key
in one batch, in send order) and hands them to a few threads (:class:`RequestPool`), each with its
own database connections, so each request's claim, evidence and state moves stay exactly as when
sent alone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from django.db import connections


def partition_batches(
    rows: Iterable[tuple[int, Hashable, str]], size: int
) -> tuple[list[list[int]], list[int]]:
    """Split ``(id, channel, business key)`` rows, given in send order, into batches that may be
    in flight at the same time; return ``(batches, held)``.

    Each batch holds at most ``size`` messages of one channel, in send order. Every message of a
    business key is in one batch, so two requests in flight never carry the same key and its
    order on the wire is its send order. A message whose key's batch is full (or on another
    channel) is held, with every later message of its key: held messages are not sent in this
    round, and the next one finds them after their predecessors' outcome.
    """
    if size < 1:
        raise ValueError(f"a batch holds at least one message, not {size}")
    batches: list[list[int]] = []
    channel_of: list[Hashable] = []
    filling: dict[Hashable, int] = {}  # the batch each channel is filling
    batch_of_key: dict[str, int] = {}
    held_keys: set[str] = set()
    held: list[int] = []
    for message_id, channel, key in rows:
        if key and key in held_keys:
            held.append(message_id)
            continue
        if key and key in batch_of_key:
            index = batch_of_key[key]
            if channel_of[index] == channel and len(batches[index]) < size:
                batches[index].append(message_id)
            else:
                held_keys.add(key)
                held.append(message_id)
            continue
        index = filling.get(channel, -1)
        if index < 0 or len(batches[index]) >= size:
            batches.append([])
            channel_of.append(channel)
            index = filling[channel] = len(batches) - 1
        batches[index].append(message_id)
        if key:
            batch_of_key[key] = index
    return batches, held


_STOP = object()


class RequestPool:
    """``workers`` threads that run jobs (one DIP request each) and hand back their results.

    Each thread keeps its own database connections (Django's are per thread) for its life and
    closes them when the pool closes. Use as a context manager.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a pool has at least one thread, not {workers}")
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"dip-request-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    return
                function, done, slot = job
                try:
                    slot.append((True, function()))
                except BaseException as exc:  # handed to the caller, which re-raises it
                    slot.append((False, exc))
                finally:
                    done.release()
        finally:
            connections.close_all()

    def run[T](self, jobs: Sequence[Callable[[], T]]) -> list[T]:
        """Run every job, at most one per thread at a time; wait for all of them (a failed job
        never leaves another unfinished) and return their results in order. Raises the first
        failure once all are over."""
        done = threading.Semaphore(0)
        slots: list[list[tuple[bool, Any]]] = [[] for _ in jobs]
        for function, slot in zip(jobs, slots, strict=True):
            self._jobs.put((function, done, slot))
        for _ in jobs:
            done.acquire()
        results: list[T] = []
        for [(ok, value)] in slots:
            if not ok:
                raise value
            results.append(value)
        return results

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(_STOP)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> RequestPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
