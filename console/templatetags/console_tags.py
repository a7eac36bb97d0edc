"""Template helpers for the console: masking of sensitive fields by the viewer's rights."""

from __future__ import annotations

from datetime import timedelta

from django import template

from console.roles import mask, mask_mpans_in
from messaging.health import span

register = template.Library()


@register.filter
def masked(value: str | None, may_see_content: bool) -> str:
    """``{{ m.mpan|masked:may_see_content }}``: the value, or its masked form."""
    return mask(value, content=bool(may_see_content))


@register.filter
def duration_short(value: timedelta | None) -> str:
    """A duration as people read it (``2 h 5 min``, ``1 d``), not Django's ``2:05:00``."""
    if value is None:
        return ""
    return span(value)


@register.filter
def millis(value: float | None) -> str:
    """A latency in milliseconds, in the unit that reads best."""
    if value is None:
        return ""
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    return span(timedelta(milliseconds=value))


@register.filter
def sum_of(values: list[int]) -> int:
    return sum(values)


@register.filter
def mpans_masked(text: str | None, may_see_content: bool) -> str:
    """``{{ f.text|mpans_masked:may_see_content }}``: any MPAN in free text masked."""
    return mask_mpans_in(text, content=bool(may_see_content))
