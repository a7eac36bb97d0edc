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
    order on the wire is its send order. A key's messages are placed together, in the first
    batch with room for all of them (keys in the order their first message comes), so a backlog
    with several messages per key still fills every batch. Beyond ``size`` messages of one key,
    or once a key shows on another channel, its later messages are held: not sent in this round,
    the next one finds them after their predecessors' outcome.
    """
    if size < 1:
        raise ValueError(f"a batch holds at least one message, not {size}")
    position: dict[int, int] = {}
    members_of: dict[Hashable, list[int]] = {}  # in the order of each key's first message
    channel_of: dict[Hashable, Hashable] = {}
    closed: set[Hashable] = set()  # keys whose later messages wait for the next round
    held: list[int] = []
    for n, (message_id, channel, key) in enumerate(rows):
        position[message_id] = n
        group: Hashable = key if key else ("", message_id)  # no key: a group of its own
        if group in closed:
            held.append(message_id)
        elif group not in members_of:
            members_of[group] = [message_id]
            channel_of[group] = channel
        elif channel_of[group] == channel and len(members_of[group]) < size:
            members_of[group].append(message_id)
        else:
            closed.add(group)
            held.append(message_id)
    batches: list[list[int]] = []
    batch_channels: list[Hashable] = []
    for group, members in members_of.items():
        channel = channel_of[group]
        for index, batch in enumerate(batches):
            if batch_channels[index] == channel and len(batch) + len(members) <= size:
                batch.extend(members)
                break
        else:
            batches.append(list(members))
            batch_channels.append(channel)
    for batch in batches:
        batch.sort(key=position.__getitem__)
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
