"""How the console writes lengths of time for people: "every hour", not ``1:00:00``."""

from __future__ import annotations

from datetime import timedelta

from django import template

register = template.Library()

_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def spoken_duration(value: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` as "1 hour 30 minutes"; whole units only, largest first."""
    remaining = int(value.total_seconds())
    if remaining <= 0:
        return "0 seconds"
    parts = []
    for name, seconds in _UNITS:
        count, remaining = divmod(remaining, seconds)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts)


@register.filter
def cadence(value: timedelta | None) -> str:
    """A channel's expected cadence as people say it: "every hour", "every 15 minutes"."""
    if value is None:
        return "—"
    spoken = spoken_duration(value)
    # "every 1 hour" reads oddly; "every hour" is what an operations desk would write.
    return "every " + (spoken[2:] if spoken.startswith("1 ") and " " not in spoken[2:] else spoken)
