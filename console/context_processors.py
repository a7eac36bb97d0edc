"""What every console page needs about the person's rights: the menu they may open and whether
they see message content."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from console.roles import may_see_content, menu


def rights(request: HttpRequest) -> dict[str, Any]:
    membership = getattr(request, "membership", None)
    areas = menu(membership)
    return {
        "menu": areas,
        "menu_areas": {area for area, _, _ in areas},
        "may_see_content": may_see_content(membership),
    }
