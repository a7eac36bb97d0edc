"""Who may open which area of the console and who sees message content: one table, read by the
menu, by every view's check and by the exports, so what is offered and what is allowed agree.

Content rights (a message's payload and the personal or commercially sensitive facts about it,
the MPAN and the business key) belong to the roles that handle messages: message operators and
auditors, the same roles whose evidence packs may carry raw payloads. Every other role with
metadata rights sees those fields masked; viewers see aggregates only.
"""

from __future__ import annotations

import re

from tenants.models import Membership, Role
from tenants.selectors import user_has_role

# Who may see message metadata (viewers see aggregates only) and who may see content.
METADATA_ROLES: tuple[str, ...] = (
    Role.TENANT_ADMIN,
    Role.MESSAGE_OPERATOR,
    Role.APPROVER,
    Role.AUDITOR,
    Role.CERTIFICATE_ADMIN,
)
CONTENT_ROLES: tuple[str, ...] = (Role.MESSAGE_OPERATOR, Role.AUDITOR)
EVIDENCE_ROLES: tuple[str, ...] = (Role.AUDITOR, Role.TENANT_ADMIN)
ACTIVITY_ROLES: tuple[str, ...] = (Role.TENANT_ADMIN, Role.AUDITOR)

# The menu in order: (area, URL name, label, roles that may open it; None: every member).
AREAS: tuple[tuple[str, str, str, tuple[str, ...] | None], ...] = (
    ("home", "console:home", "Overview", None),
    ("flows", "console:flows", "Flows", None),
    ("messages", "console:messages", "Messages", METADATA_ROLES),
    ("outbound", "console:outbound", "Outbound", METADATA_ROLES),
    ("exceptions", "console:exceptions", "Exceptions", METADATA_ROLES),
    ("replays", "console:replays", "Replays", METADATA_ROLES),
    ("reconciliation", "console:reconciliation", "Reconciliation", None),
    ("certificates", "console:certificates", "Certificates", None),
    ("evidence", "console:evidence", "Evidence", EVIDENCE_ROLES),
    ("downstream", "console:downstream", "Downstream", None),
    ("settings", "console:settings", "Settings", None),
    ("activity", "console:activity", "Activity", ACTIVITY_ROLES),
)
AREA_ROLES = {area: roles for area, _, _, roles in AREAS}

MASK = "•"


def may_open(membership: Membership | None, area: str) -> bool:
    """Whether the member may open ``area`` (no membership: nothing)."""
    if membership is None:
        return False
    roles = AREA_ROLES[area]
    return roles is None or user_has_role(membership, *roles)


def may_see_content(membership: Membership | None) -> bool:
    return user_has_role(membership, *CONTENT_ROLES)


def menu(membership: Membership | None) -> list[tuple[str, str, str]]:
    """(area, URL name, label) of every area the member may open, in menu order."""
    return [(area, url, label) for area, url, label, _ in AREAS if may_open(membership, area)]


def mask(value: str | None, *, content: bool) -> str:
    """``value`` for a role with content rights; otherwise all but its last two characters
    hidden (enough to tell two rows apart on screen, not to identify a supply point)."""
    if not value or content:
        return value or ""
    return MASK * max(len(value) - 2, 1) + value[-2:] if len(value) > 4 else MASK * len(value)


MPAN_IN_TEXT = re.compile(r"(?<!\d)\d{13}(?!\d)")


def mask_mpans_in(text: str | None, *, content: bool) -> str:
    """Free text (a finding, an exception's title, a reason) with any MPAN in it masked for
    roles without content rights: validation names the MPAN it refused."""
    if not text or content:
        return text or ""
    return MPAN_IN_TEXT.sub(lambda found: mask(found.group(0), content=False), text)
