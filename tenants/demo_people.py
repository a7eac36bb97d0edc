"""The demo's people: who ``seed_demo`` creates and who ``make run``'s banner lists.

Kept free of Django imports so the launcher can print the banner before Django is set up, and
listed once so the banner can never again name fewer people than the demo has.
"""

from __future__ import annotations

from dataclasses import dataclass

DEMO_PASSWORD = "busbar-demo-pass"

# Role values as tenants.models.Role and StaffRole spell them, with the words the banner uses.
ROLE_WORDS = {
    "tenant_admin": "tenant admin",
    "certificate_admin": "certificate admin",
    "message_operator": "message operator",
    "approver": "approver",
    "viewer": "viewer",
    "auditor": "auditor",
    "provider_support": "provider support",
    "provider_admin": "provider admin",
}


@dataclass(frozen=True)
class DemoPerson:
    username: str
    tenant: str | None  # a demo tenant's slug; None for Busbar's own staff
    roles: tuple[str, ...]

    def describe(self) -> str:
        roles = ", ".join(ROLE_WORDS[role] for role in self.roles)
        return f"{self.tenant} {roles}" if self.tenant else roles


DEMO_PEOPLE = (
    DemoPerson("alice", "acme", ("tenant_admin", "certificate_admin", "approver")),
    DemoPerson("bob", "acme", ("message_operator",)),
    DemoPerson("victor", "acme", ("viewer",)),
    DemoPerson("audrey", "acme", ("auditor",)),
    DemoPerson("charlie", "globex", ("tenant_admin", "message_operator")),
    DemoPerson("sam", None, ("provider_support",)),
)


def banner_lines() -> str:
    """One line per demo person, for ``make run``'s banner."""
    width = max(len(person.username) for person in DEMO_PEOPLE) + 2
    lines = []
    for person in DEMO_PEOPLE:
        line = f"    {person.username:<{width}}{person.describe()}"
        if person.tenant is None:
            line += (
                ": lands on Support, the health matrix of every tenant's flows,"
                "\n"
                + " "
                * (4 + width)
                + "once signed in with a second factor (set one up by clicking your"
                "\n" + " " * (4 + width) + "name in the console's top bar, then sign in again)"
            )
        lines.append(line)
    return "\n".join(lines)
