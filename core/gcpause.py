"""Pausing Python's cyclic garbage collector around a batch that allocates a lot and keeps it.

An inbound round parses, validates and maps hundreds of messages and holds all of them until it
commits: several hundred thousand containers, none of them garbage and almost none in a
reference cycle (reference counting frees them when the round ends). Allocating them makes the
collector run its young generations hundreds of times and, as the survivors pile up, full
collections that walk the whole process: about a fifth of a round's CPU, measured
(bench/inbound_bench.py). With the collector paused for the round, whatever cycles the round
leaves are found by the first collection after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic collector disabled, and enable it again afterwards (also
    when the block raises). Leaves a collector that was already disabled disabled. The switch is
    process-wide: use it around a process's one unit of work, not in code that runs in threads
    beside other work."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
