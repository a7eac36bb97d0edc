"""Waiting on a condition instead of sleeping: the one helper every test that waits should use.

    from tests.waiting import wait_for

    delivered = wait_for(lambda: receiver.messages(), timeout=10, what="the push")

A test that sleeps a fixed time is slow when the machine is idle and flaky when it is busy; a test
that asserts elapsed wall-clock time measures the machine. Wait for the thing itself, with a
generous timeout that is only reached when something is wrong. To test *time* (backoff, expiry,
lock-outs), drive a controlled clock instead (``time_machine.travel``, or a ``now=`` argument).

Importable without Django (dipsim's tests use it too).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for[T](
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    what: str = "the condition",
    poll: float = 0.05,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Raises AssertionError naming ``what`` (and the last value seen) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (last: {value!r})"
            )
        time.sleep(poll)
