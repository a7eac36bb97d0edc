"""Reading outbound messages: one message with its state, attempts (the DIP exchanges that carried
it) and timeline; the tenant's outbound list. Another tenant's message is a 404 like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q
from django.http import Http404

from messaging.models import DipExchange, Message, Transition
from messaging.store import selectors as store_selectors


@dataclass(frozen=True)
class OutboundDetail:
    message: Message
    timeline: list[Transition]
    exchanges: list[DipExchange]


def get_outbound_message(*, message_id: int) -> Message:
    message = store_selectors.get_message(message_id=message_id)
    if message is None or message.direction != "outbound":
        raise Http404("No such message")
    return message


def get_outbound_detail(*, message_id: int) -> OutboundDetail:
    """The message, its timeline and every request that carried it (oldest first)."""
    message = get_outbound_message(message_id=message_id)
    match = Q(pk__in=[])
    if message.sender_unique_reference:
        match |= Q(sender_references__contains=[message.sender_unique_reference])
    if message.transaction_id:
        match |= Q(transaction_ids__contains=[message.transaction_id])
    exchanges = list(DipExchange.objects.filter(match).order_by("started_at", "id"))
    return OutboundDetail(
        message=message,
        timeline=store_selectors.list_timeline(message_id=message.id),
        exchanges=exchanges,
    )


def list_outbound_messages(*, state: str | None = None, limit: int = 100) -> list[Message]:
    """The tenant's newest outbound messages, optionally in one state."""
    query = Message.objects.filter(direction="outbound")
    if state:
        query = query.filter(state=state)
    return list(query.order_by("-id")[:limit])
