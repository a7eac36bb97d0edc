"""The one rule every expiry bar follows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.expiry import expiry_gauge

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("days", "urgency", "bar"),
    [
        (400, "ok", 100),
        (90, "ok", 25),
        (60, "warning", 16),
        (14, "critical", 4),
        (-3, "expired", 0),
    ],
)
def test_the_gauge_reddens_as_expiry_nears(days, urgency, bar):
    gauge = expiry_gauge(NOW + timedelta(days=days), now=NOW)
    assert (gauge.days_left, gauge.urgency, gauge.bar) == (days, urgency, bar)


def test_no_expiry_draws_nothing():
    assert expiry_gauge(None, now=NOW).days_left is None
