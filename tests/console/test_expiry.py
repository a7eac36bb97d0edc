"""The one rule every expiry bar follows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.expiry import expiry_gauge

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("left", "urgency"),
    [
        (timedelta(days=400), "ok"),
        (timedelta(days=61), "ok"),
        (timedelta(days=60, hours=23), "warning"),  # 60 whole days left: warnings have started
        (timedelta(days=15), "warning"),
        (timedelta(days=14, hours=23), "critical"),  # 14 whole days left: red
        (SECOND, "critical"),
        (timedelta(0), "expired"),
        (timedelta(days=-3), "expired"),
    ],
)
def test_the_gauge_reddens_as_expiry_nears(left, urgency):
    assert expiry_gauge(NOW + left, now=NOW).urgency == urgency


def test_the_bar_is_full_from_a_year_out_empty_at_expiry_and_shrinks_in_between():
    def bar(days: float) -> int:
        return expiry_gauge(NOW + timedelta(days=days), now=NOW).bar

    assert bar(365) == bar(400) == bar(3650) == 100
    assert bar(0) == bar(-3) == 0
    widths = [bar(days) for days in range(0, 366)]
    assert widths == sorted(widths)  # never wider nearer expiry
    assert bar(365 / 2) == 50  # in proportion to the year
    assert 0 < bar(14) < bar(60) < bar(90) < 100


def test_days_left_counts_whole_days():
    assert expiry_gauge(NOW + timedelta(days=20, hours=23), now=NOW).days_left == 20
    assert expiry_gauge(NOW - timedelta(days=3), now=NOW).days_left == -3


def test_no_expiry_draws_nothing():
    gauge = expiry_gauge(None, now=NOW)
    assert (gauge.days_left, gauge.bar) == (None, 0)
