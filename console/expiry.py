"""How near an expiry is, drawn as a bar: one rule for every page that shows one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Amber once expiry warnings start (tenants.certificates: 60 days out), red from 14 days out.
WARNING_DAYS = 60
CRITICAL_DAYS = 14


@dataclass(frozen=True)
class ExpiryGauge:
    days_left: int | None
    bar: int  # percent of the bar's width: a year or more fills it
    urgency: str  # ok, warning, critical, expired (the CSS class suffix)


def expiry_gauge(not_after: datetime | None, *, now: datetime) -> ExpiryGauge:
    if not_after is None:
        return ExpiryGauge(days_left=None, bar=0, urgency="ok")
    days = (not_after - now).days
    if not_after <= now:
        urgency = "expired"
    elif days <= CRITICAL_DAYS:
        urgency = "critical"
    elif days <= WARNING_DAYS:
        urgency = "warning"
    else:
        urgency = "ok"
    return ExpiryGauge(
        days_left=days, bar=max(0, min(100, round(days / 365 * 100))), urgency=urgency
    )
