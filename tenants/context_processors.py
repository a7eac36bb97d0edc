from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from tenants.authentication import in_staff_role
from tenants.models import StaffRole
from tenants.selectors import list_invitations_for_user


def tenancy(request: HttpRequest) -> dict:
    """The current tenant, the user's memberships (the tenant switcher) and pending invitations."""
    return {
        "current_tenant": getattr(request, "tenant", None),
        "current_membership": getattr(request, "membership", None),
        "memberships": getattr(request, "memberships", []),
        # Lazy: counted only by a page that shows it (the layout's top bar, once per page).
        "pending_invitations": SimpleLazyObject(lambda: _pending_invitations(request)),
        "is_provider_staff": SimpleLazyObject(lambda: _is_provider_staff(request)),
    }


def _is_provider_staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return False
    return in_staff_role(request, StaffRole.PROVIDER_SUPPORT, StaffRole.PROVIDER_ADMIN)


def _pending_invitations(request: HttpRequest) -> int:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return 0
    return len(list_invitations_for_user(user=user))
