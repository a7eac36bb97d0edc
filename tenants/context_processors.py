from __future__ import annotations

from django.http import HttpRequest


def tenancy(request: HttpRequest) -> dict:
    """The current tenant and the user's memberships, for the layout's tenant switcher."""
    return {
        "current_tenant": getattr(request, "tenant", None),
        "current_membership": getattr(request, "membership", None),
        "memberships": getattr(request, "memberships", []),
    }
