"""L1 schema validation as the DIP does it: per interface variant, keys case-insensitive on ingress.

Two sources of schemas share one interface: the official specification loaded at run time
(:mod:`dipsim.spec`) or dipsim's own schemas (:mod:`dipsim.schemas`). Validators are compiled once
and cached. Keys are first validated as sent; only a message that fails is re-cased along its
schema and validated again, so the common, correctly-cased message costs one validator call.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema

from dipsim import schemas
from dipsim.spec import Spec, load_spec

Validator = Callable[[Any], Any]

TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
MPAN_WEIGHTS = (3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43)

# A schema failure on one of these S1/S0/A0 fields gets the specific MSG code rather than MSG1001.
FIELD_CODES: dict[tuple[str, str], str] = {
    ("S0", "interfaceID"): "MSG1002",
    ("S1", "senderTimestamp"): "MSG1007",
    ("S1", "senderDIPID"): "MSG1009",
    ("S1", "senderRoleID"): "MSG1010",
    ("S1", "DIPConnectionProviderID"): "MSG1011",
    ("S1", "senderCorrelationID"): "MSG1012",
    ("A0", "primaryRecipients"): "MSG1031",
}


def mpan_check_digit_ok(mpan: str) -> bool:
    """True when a 13-digit MPAN core's last digit matches its check digit (DIP.md section 9)."""
    if len(mpan) != 13 or not mpan.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(mpan[:12], MPAN_WEIGHTS, strict=True))
    return total % 11 % 10 == int(mpan[12])


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Parse a DT-003 timestamp (``YYYY-MM-DDThh:mm:ss+hh:mm``, exactly 25 characters)."""
    if not isinstance(value, str) or len(value) != 25 or not TIMESTAMP_RE.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def dip_timestamp(moment: dt.datetime | None = None) -> str:
    """Format a moment as DT-003 in UTC: ``2026-01-31T10:00:00+00:00``."""
    moment = (moment or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


@dataclass
class Failure:
    """Why a message failed L1: the MSG code and a human-readable detail for ``help``."""

    code: str
    detail: str


def _get_ci(mapping: Any, key: str) -> Any:
    """Read ``key`` from a dict regardless of case (ingress keys are case-insensitive)."""
    if not isinstance(mapping, dict):
        return None
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return None


def event_code_of(payload: Any) -> tuple[Any, Any]:
    """Return ``(interfaceID, eventCode)`` from a payload's S0, tolerating any key case."""
    s0 = _get_ci(_get_ci(payload, "CommonBlock"), "S0")
    return _get_ci(s0, "interfaceID"), _get_ci(s0, "eventCode")


class Validators:
    """Compiled L1 validators from the official spec (``spec_dir``) or dipsim's own schemas."""

    def __init__(self, spec_dir: str | Path | None = None) -> None:
        self.spec: Spec | None = load_spec(spec_dir) if spec_dir else None
        self._builtin = schemas.builtin_variants() if self.spec is None else {}
        self._compiled: dict[Any, Validator] = {}
        self._case_maps: dict[int, dict[str, str]] = {}

    @property
    def source(self) -> str:
        return (
            f"official specification at {self.spec.directory}"
            if self.spec
            else "dipsim built-in schemas"
        )

    def interfaces(self) -> set[str]:
        if self.spec is not None:
            return set(self.spec.payload_keys)
        return {interface for interface, _ in self._builtin}

    def event_codes(self, interface_id: str) -> list[str]:
        if self.spec is not None:
            return self.spec.event_codes(interface_id)
        return sorted(ev for (if_id, ev) in self._builtin if if_id == interface_id)

    def variant_keys(self) -> set[tuple[str, str]]:
        """Every ``(interface, event code)`` these validators can check."""
        if self.spec is not None:
            return set(self.spec.variants)
        return set(self._builtin)

    def knows(self, interface_id: str, event_code: str) -> bool:
        if self.spec is not None:
            return (interface_id, event_code) in self.spec.variants
        return (interface_id, event_code) in self._builtin

    def schema_versions(self, interface_id: str, event_code: str) -> tuple[str, ...]:
        if self.spec is not None:
            variant = self.spec.variants.get((interface_id, event_code))
            return variant.schema_versions if variant else ()
        return (schemas.SCHEMA_VERSION,)

    def _variant(
        self, interface_id: str, event_code: str
    ) -> tuple[Validator, dict[str, Any], dict[str, Any]] | None:
        """Return ``(validator, root schema, definitions)`` for a variant, or None if unknown."""
        if self.spec is not None:
            variant = self.spec.variants.get((interface_id, event_code))
            if variant is None:
                return None
            root = {"$ref": f"#/definitions/{variant.schema_key}"}
            return self.spec.validator(variant.schema_key), root, self.spec.definitions
        schema = self._builtin.get((interface_id, event_code))
        if schema is None:
            return None
        key = (interface_id, event_code)
        validator = self._compiled.get(key)
        if validator is None:
            validator = fastjsonschema.compile(schema)
            self._compiled[key] = validator
        return validator, schema, {}

    def validate_payload(self, interface_id: str, payload: Any) -> tuple[Any, Failure | None]:
        """Validate one message payload for channel ``interface_id``.

        Returns ``(payload in the specification's key case, None)`` when valid, otherwise
        ``(payload as far as it could be normalised, Failure)``.
        """
        if not isinstance(payload, dict):
            return payload, Failure("MSG1001", "payload is not a JSON object")
        if_id, event_code = event_code_of(payload)
        if isinstance(if_id, str) and if_id != interface_id:
            return payload, Failure(
                "MSG1002", f"S0.interfaceID {if_id!r} does not match channel {interface_id}"
            )
        if not isinstance(event_code, str) or not self.knows(interface_id, event_code):
            return payload, Failure(
                "MSG1001", f"S0.eventCode {event_code!r} is not an event of {interface_id}"
            )
        found = self._variant(interface_id, event_code)
        assert found is not None
        validator, root, definitions = found
        try:
            validator(payload)
            return payload, None
        except fastjsonschema.JsonSchemaValueException:
            pass
        normalised = self._normalise(payload, root, definitions)
        try:
            validator(normalised)
        except fastjsonschema.JsonSchemaValueException as err:
            return normalised, Failure(_code_for(err), _detail(err))
        return normalised, None

    def validate_variant(self, interface_id: str, event_code: str, payload: Any) -> Failure | None:
        """Validate against one named variant (the ``/validate/{IF}/{event}`` endpoints)."""
        found = self._variant(interface_id, event_code)
        if found is None:
            return Failure("MSG1001", f"no schema for {interface_id} {event_code}")
        validator, root, definitions = found
        try:
            validator(self._normalise(payload, root, definitions))
        except fastjsonschema.JsonSchemaValueException as err:
            return Failure(_code_for(err), _detail(err))
        return None

    # ---- key case ---------------------------------------------------------------------------------

    def _resolve(self, node: Any, definitions: dict[str, Any]) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = definitions[node["$ref"].removeprefix("#/definitions/")]
        return node

    def _props(self, schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
        props = dict(schema.get("properties") or {})
        for member in [
            *(schema.get("oneOf") or []),
            *(schema.get("anyOf") or []),
            *(schema.get("allOf") or []),
        ]:
            props.update(self._props(self._resolve(member, definitions), definitions))
        return props

    def _normalise(self, value: Any, schema: Any, definitions: dict[str, Any]) -> Any:
        schema = self._resolve(schema, definitions)
        if not isinstance(schema, dict):
            return value
        if isinstance(value, dict):
            props = self._props(schema, definitions)
            case_map = self._case_maps.get(id(schema))
            if case_map is None:
                case_map = {name.lower(): name for name in props}
                self._case_maps[id(schema)] = case_map
            out: dict[str, Any] = {}
            for key, sub in value.items():
                canonical = case_map.get(key.lower(), key) if isinstance(key, str) else key
                sub_schema = props.get(canonical)
                out[canonical] = (
                    self._normalise(sub, sub_schema, definitions) if sub_schema is not None else sub
                )
            return out
        if isinstance(value, list):
            items = schema.get("items")
            if items is None:
                return value
            return [self._normalise(item, items, definitions) for item in value]
        return value


def _path_parts(err: fastjsonschema.JsonSchemaValueException) -> list[str]:
    path = [str(p) for p in (err.path or [])]
    # A missing required property is reported on its parent; name it so the code mapping sees it.
    if err.rule == "required":
        match = re.search(r"must contain \[(.*?)\]", err.message or "")
        if match:
            path.append(match.group(1).split(",")[0].strip(" '\""))
    return path


def _code_for(err: fastjsonschema.JsonSchemaValueException) -> str:
    path = _path_parts(err)
    if err.rule == "required":
        return "MSG1001"
    for block_field, code in FIELD_CODES.items():
        block, name = block_field
        for i in range(len(path) - 1):
            if path[i] == block and path[i + 1] == name:
                return code
    return "MSG1001"


def _detail(err: fastjsonschema.JsonSchemaValueException) -> str:
    return (err.message or "schema failure")[:480]
