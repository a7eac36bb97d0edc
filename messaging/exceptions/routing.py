"""Whose an outbound failure is: every way the outbound path parks or loses a message, mapped to
an exception code, category, severity and the party who must act.

Inbound routing lives beside the findings it reads (``messaging.inbound.processing.
exception_for``); outbound failures arrive as a state move with the DIP's answer in its detail,
so they are read here, in one table-like function the tests enumerate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from messaging.exceptions.models import Actor, Category, Severity
from messaging.exceptions.services import ExceptionSpec, raise_exceptions


@dataclass(frozen=True)
class Route:
    code: str
    category: str
    to_act: str
    severity: str = Severity.ERROR
    owner_queue: str | None = None


# A refusal's MSG category (messaging.outbound.services._category) -> who acts on it.
_MSG_ROUTES = {
    # The connection's identity as Busbar configured it: Busbar's to fix.
    "technical": (Category.TECHNICAL, Actor.PROVIDER, "provider-support"),
    # Routing and recipients: the DIP's or the recipient's records.
    "market_operations": (Category.MARKET_OPERATIONS, Actor.MARKET_PARTY, None),
    # Registration has not caught up with the MPAN: the registration service's.
    "awaiting_dependency": (Category.AWAITING_DEPENDENCY, Actor.MARKET_PARTY, None),
    # The content the client submitted.
    "data_quality": (Category.DATA_QUALITY, Actor.CLIENT, None),
}


def outbound_route(*, to_state: str, reason: str, detail: Mapping[str, Any] | None) -> Route:
    """The exception for an outbound message moved to ``rejected`` or ``failed``."""
    detail = detail or {}
    code = str(detail.get("code") or "")
    category = detail.get("category")
    if "response_code" in detail:  # a business response (R0) refused or lapsed it
        return Route(f"R0-{detail['response_code']}", Category.MARKET_OPERATIONS, Actor.CLIENT)
    if code.startswith("RCP"):  # the recipient's status message refused it
        if code == "RCP9999":  # our signature did not verify at the recipient
            return Route(code, Category.TECHNICAL, Actor.PROVIDER, Severity.FATAL)
        return Route(code, Category.DATA_QUALITY, Actor.CLIENT)
    if code.startswith("MSG"):  # the DIP refused it when it was sent
        cat, actor, queue = _MSG_ROUTES.get(str(category), _MSG_ROUTES["data_quality"])
        return Route(code, cat, actor, owner_queue=queue)
    if category == "credentials":  # certificate or API key refused or unusable
        return Route(
            "OUTBOUND-CREDENTIALS", Category.TECHNICAL, Actor.CLIENT, Severity.FATAL,
            owner_queue="client-credentials",
        )  # fmt: skip
    if reason.startswith("retry budget spent"):
        return Route("OUTBOUND-RETRY-BUDGET", Category.TECHNICAL, Actor.PROVIDER)
    if "transport" in detail:
        return Route("OUTBOUND-TRANSPORT", Category.TECHNICAL, Actor.PROVIDER)
    return Route("OUTBOUND-HALTED", Category.TECHNICAL, Actor.PROVIDER, Severity.FATAL)


def raise_outbound_exceptions(
    *,
    tenant_id: UUID | str,
    message_ids: Sequence[int],
    to_state: str,
    reason: str,
    detail: Mapping[str, Any] | None,
) -> int:
    """Record one exception per outbound message that was just rejected or parked."""
    from messaging.models import Message

    if not message_ids:
        return 0
    route = outbound_route(to_state=to_state, reason=reason, detail=detail)
    rows = Message.objects.filter(id__in=list(message_ids)).values(
        "id", "raw_id", "connection_id", "interface_id", "transaction_id"
    )
    safe = {k: v for k, v in (detail or {}).items() if isinstance(v, (str, int, bool, list))}
    return raise_exceptions(
        specs=[
            ExceptionSpec(
                code=route.code,
                title=f"{to_state}: {reason}"[:300],
                category=route.category,
                severity=route.severity,
                message_id=row["id"],
                raw_id=row["raw_id"],
                connection_id=row["connection_id"],
                interface_id=row["interface_id"],
                transaction_id=row["transaction_id"] or "",
                detail=safe,
                to_act=route.to_act,
                owner_queue=route.owner_queue,
                direction="out",
            )
            for row in rows
        ]
    )
