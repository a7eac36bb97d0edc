"""The message state machine, written once as a table of allowed transitions per direction.

A transition is one conditional ``UPDATE ... WHERE state = <expected>`` (``services.transition``), so
two workers cannot both move one message and a stale task moves nothing. The first state of a
message is set when it is stored (``received`` inbound, ``accepted`` outbound) and is implied on the
timeline by the message's ``created_at``.
"""

from __future__ import annotations

from enum import StrEnum


class InboundState(StrEnum):
    RECEIVED = "received"  # stored by the webhook, waiting for processing
    VALID = "valid"  # passed validation (warnings allowed)
    INVALID = "invalid"  # a fatal or error finding: an exception holds it
    AWAITING = "awaiting"  # waits for a dependency (an earlier message, reference data)
    NORMALISED = "normalised"  # its events are recorded
    DELIVERED = "delivered"  # every subscribed consumer has its events
    FAILED = "failed"  # parked: attempts exhausted or a technical fault


class OutboundState(StrEnum):
    ACCEPTED = "accepted"  # stored from a client's submission, nothing sent
    READY = "ready"  # enriched, validated, final bytes stored; due at next_attempt_at
    SENDING = "sending"  # in a request to the DIP (leased)
    SENT = "sent"  # the DIP answered 201 and gave its transaction id
    ACKNOWLEDGED = "acknowledged"  # a positive status message or business response arrived
    INVALID = "invalid"  # refused before sending: the client must correct it
    REJECTED = "rejected"  # the DIP refused it (MSG or RCP code)
    FAILED = "failed"  # parked: the retry budget ran out or credentials were refused
    SUPERSEDED = "superseded"  # a later version for the same business key replaced it unsent


INBOUND_INITIAL = InboundState.RECEIVED
OUTBOUND_INITIAL = OutboundState.ACCEPTED

INBOUND_TRANSITIONS: dict[str, frozenset[str]] = {
    InboundState.RECEIVED: frozenset(
        {InboundState.VALID, InboundState.INVALID, InboundState.AWAITING, InboundState.FAILED}
    ),
    InboundState.AWAITING: frozenset(
        {InboundState.VALID, InboundState.INVALID, InboundState.FAILED}
    ),
    InboundState.VALID: frozenset({InboundState.NORMALISED, InboundState.FAILED}),
    InboundState.NORMALISED: frozenset({InboundState.DELIVERED}),
    # Reprocessing (a corrected rule, a newer mapping) starts again from the raw message.
    InboundState.INVALID: frozenset({InboundState.RECEIVED}),
    InboundState.FAILED: frozenset({InboundState.RECEIVED}),
    InboundState.DELIVERED: frozenset(),
}

OUTBOUND_TRANSITIONS: dict[str, frozenset[str]] = {
    # rejected before sending: the final bytes failed validation against the schema registry.
    OutboundState.ACCEPTED: frozenset(
        {
            OutboundState.READY,
            OutboundState.INVALID,
            OutboundState.REJECTED,
            OutboundState.SUPERSEDED,
        }
    ),
    OutboundState.READY: frozenset({OutboundState.SENDING, OutboundState.SUPERSEDED}),
    OutboundState.SENDING: frozenset(
        {
            OutboundState.SENT,
            OutboundState.READY,
            OutboundState.REJECTED,
            OutboundState.FAILED,
        }
    ),
    OutboundState.SENT: frozenset({OutboundState.ACKNOWLEDGED, OutboundState.REJECTED}),
    OutboundState.FAILED: frozenset({OutboundState.READY}),
    OutboundState.INVALID: frozenset(),
    OutboundState.REJECTED: frozenset(),
    OutboundState.ACKNOWLEDGED: frozenset(),
    OutboundState.SUPERSEDED: frozenset(),
}

TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    "inbound": INBOUND_TRANSITIONS,
    "outbound": OUTBOUND_TRANSITIONS,
}

# States in which nothing more happens without a person (the work index leaves them out).
TERMINAL = frozenset(
    {
        InboundState.DELIVERED,
        OutboundState.ACKNOWLEDGED,
        OutboundState.REJECTED,
        OutboundState.SUPERSEDED,
    }
)


class TransitionNotAllowed(ValueError):
    """The state machine has no edge from one state to the other in that direction."""


def check_transition(direction: str, from_state: str, to_state: str) -> None:
    """Raise TransitionNotAllowed unless ``from_state -> to_state`` is an edge for ``direction``."""
    table = TRANSITIONS.get(direction)
    if table is None:
        raise TransitionNotAllowed(f"unknown direction {direction!r}")
    if from_state not in table:
        raise TransitionNotAllowed(f"unknown {direction} state {from_state!r}")
    if to_state not in table[from_state]:
        allowed = ", ".join(sorted(table[from_state])) or "nothing"
        raise TransitionNotAllowed(
            f"{direction} messages cannot go from {from_state!r} to {to_state!r}"
            f" (allowed: {allowed})"
        )
