"""The entry points: one message, or a batch sharing one history look-up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from messaging.validation import stages as st
from messaging.validation.registry import SchemaRegistry
from messaging.validation.types import (
    STOPPING,
    BusinessKey,
    Finding,
    KeyRecord,
    Severity,
    Stage,
    ValidationContext,
    ValidationOutcome,
)

ALL_STAGES: tuple[str, ...] = ("syntactic", "contextual", "business")


class _Parsed:
    __slots__ = ("findings", "keys", "payload", "stopped", "syntax")

    def __init__(self) -> None:
        self.payload: dict[str, Any] | None = None
        self.syntax: st.Syntax | None = None
        self.findings: list[Finding] = []
        self.keys: tuple[BusinessKey, ...] = ()
        self.stopped: Stage | None = None


def _first_pass(raw: Any, context: ValidationContext, registry: SchemaRegistry) -> _Parsed:
    parsed = _Parsed()
    payload, failure = st.parse_payload(raw)
    if failure is not None:
        parsed.findings.append(failure)
        parsed.stopped = Stage.SYNTACTIC
        return parsed
    assert payload is not None
    parsed.payload = payload
    syntax = st.syntactic(payload, context, registry)
    parsed.syntax = syntax
    parsed.findings.extend(syntax.findings)
    if syntax.stopped:
        parsed.stopped = Stage.SYNTACTIC
        return parsed
    assert syntax.interface is not None
    assert syntax.event_code is not None
    parsed.keys = st.business_keys(syntax.interface, syntax.event_code, payload)
    return parsed


def _finish(
    parsed: _Parsed,
    context: ValidationContext,
    registry: SchemaRegistry,
    held: Mapping[str, KeyRecord],
    wanted: Sequence[str],
) -> ValidationOutcome:
    syntax = parsed.syntax
    if parsed.stopped is None and syntax is not None and parsed.payload is not None:
        interface, event = syntax.interface or "", syntax.event_code or ""
        if "contextual" in wanted:
            found = st.contextual(interface, event, parsed.payload, context, parsed.keys, held)
            parsed.findings.extend(found)
            if any(f.severity is Severity.FATAL for f in found):
                parsed.stopped = Stage.CONTEXTUAL
        if parsed.stopped is None and "business" in wanted:
            found = st.business(interface, parsed.payload, context)
            parsed.findings.extend(found)
            if any(f.severity is Severity.FATAL for f in found):
                parsed.stopped = Stage.BUSINESS
    return ValidationOutcome(
        findings=tuple(parsed.findings),
        ok=not any(f.severity in STOPPING for f in parsed.findings),
        interface=syntax.interface if syntax else None,
        schema_version=syntax.schema_version if syntax else None,
        event_code=syntax.event_code if syntax else None,
        spec_version=registry.name,
        business_keys=parsed.keys,
        payload=parsed.payload,
        stopped_at=parsed.stopped,
    )


def _sender_reference(parsed: _Parsed) -> str:
    value = st.get_ci(
        st.get_ci(st.get_ci(parsed.payload, "CommonBlock"), "S1"), "senderUniqueReference"
    )
    return value if isinstance(value, str) else ""


def validate_message(
    payload: Any,
    *,
    context: ValidationContext,
    registry: SchemaRegistry,
    stages: Sequence[str] = ALL_STAGES,
) -> ValidationOutcome:
    """Validate one message: ``payload`` as bytes, text, the payload object or ``{"payload": ...}``.

    Never raises for bad input: everything wrong is a finding. ``stages`` limits the stages run
    (the syntactic stage always runs).
    """
    parsed = _first_pass(payload, context, registry)
    held: Mapping[str, KeyRecord] = {}
    if context.history is not None and parsed.keys and "contextual" in stages:
        held = context.history([k.key for k in parsed.keys])
    return _finish(parsed, context, registry, held, stages)


def validate_batch(
    payloads: Iterable[Any],
    *,
    context: ValidationContext,
    registry: SchemaRegistry,
    stages: Sequence[str] = ALL_STAGES,
) -> list[ValidationOutcome]:
    """Validate many messages of one connection, in order, with one history look-up for them all.

    A message also sees the earlier messages of the same batch as history, so a duplicate or an
    older version later in the batch is reported as if it had arrived separately.
    """
    parsed = [_first_pass(raw, context, registry) for raw in payloads]
    held: dict[str, KeyRecord] = {}
    if context.history is not None and "contextual" in stages:
        keys = list(dict.fromkeys(k.key for p in parsed for k in p.keys))
        if keys:
            held = dict(context.history(keys))
    outcomes = []
    for item in parsed:
        outcomes.append(_finish(item, context, registry, held, stages))
        if item.stopped is None:
            reference = _sender_reference(item)
            for key in item.keys:
                record = held.get(key.key)
                if record is None or record.version < key.version:
                    held[key.key] = KeyRecord(key.version, reference)
    return outcomes
