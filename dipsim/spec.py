"""Load the official DIP OpenAPI specification at run time and compile validators from it.

The specification is Elexon's material and is never copied into the project: a user points dipsim
at a folder holding the "unresolved" YAML files (``--spec-dir``) and this module reads them, maps
their absolute ``raw.githubusercontent.com`` references to the local files, turns OpenAPI 3.0
``nullable`` into JSON Schema, and compiles one ``fastjsonschema`` validator per interface variant
on first use.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastjsonschema
import yaml

_REF_RE = re.compile(
    r"^(?:https?://[^#]*/)?(?P<file>[^/#]*\.yaml)?#/components/schemas/(?P<name>.+)$"
)

Validator = Callable[[Any], Any]


def _file_key(path: Path) -> str:
    return path.name.removesuffix(".yaml").removesuffix("-unresolved")


def _def_key(file_key: str, name: str) -> str:
    return f"{file_key}__{name}"


def _convert(node: Any, file_key: str) -> Any:
    """Return a JSON Schema (draft 4) copy of an OpenAPI 3.0 schema node.

    ``$ref`` targets become local ``#/definitions/<file>__<name>`` pointers, ``nullable: true``
    widens ``type`` (and ``enum``) to accept ``null``, and OpenAPI-only keywords are dropped.
    """
    if isinstance(node, list):
        return [_convert(item, file_key) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        match = _REF_RE.match(node["$ref"])
        if match is None:
            raise ValueError(f"unsupported $ref {node['$ref']!r}")
        target_file = match.group("file")
        target_key = (
            target_file.removesuffix(".yaml").removesuffix("-unresolved")
            if target_file
            else file_key
        )
        # In OpenAPI 3.0 the siblings of a $ref are ignored, so we drop them as well.
        return {"$ref": f"#/definitions/{_def_key(target_key, match.group('name'))}"}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"example", "examples", "discriminator", "xml", "externalDocs", "nullable"}:
            continue
        if key in {"properties", "patternProperties", "definitions"}:
            out[key] = {name: _convert(sub, file_key) for name, sub in value.items()}
        elif key == "format" and value not in {"date-time", "email", "uri", "ipv4", "ipv6"}:
            # fastjsonschema rejects unknown formats such as "byte" and "uuid"; the DIP does not
            # check them at L1 either as far as anyone can tell.
            continue
        else:
            out[key] = _convert(value, file_key)
    if node.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


@dataclass
class Variant:
    """One interface variant: the schema that a message with that interface and event code meets."""

    interface_id: str
    event_code: str
    schema_key: str
    schema_versions: tuple[str, ...]


@dataclass
class Spec:
    """The official specification, converted, with lazily compiled validators.

    ``variants`` maps ``(interface_id, event_code)`` (event code with brackets) to its variant.
    ``key_case`` maps lower-cased property names to the case the specification uses, so that keys
    sent in any case can be normalised before validation as the DIP does on ingress.
    """

    directory: Path
    definitions: dict[str, Any]
    variants: dict[tuple[str, str], Variant]
    payload_keys: dict[str, str]
    key_case: dict[str, str]
    response_codes: tuple[str, ...]
    _compiled: dict[str, Validator] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def interfaces(self) -> list[str]:
        return sorted(self.payload_keys)

    def event_codes(self, interface_id: str) -> list[str]:
        return sorted(ev for (if_id, ev) in self.variants if if_id == interface_id)

    def schema_for(self, key: str) -> dict[str, Any]:
        """Return a self-contained JSON schema for definition ``key`` (``<file>__<name>``)."""
        return {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "definitions": self.definitions,
            "$ref": f"#/definitions/{key}",
        }

    def validator(self, key: str) -> Validator:
        """Return the compiled validator for definition ``key``, compiling it once."""
        found = self._compiled.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._compiled.get(key)
            if found is None:
                found = fastjsonschema.compile(self.schema_for(key), use_default=False)
                self._compiled[key] = found
        return found

    def variant_validator(self, interface_id: str, event_code: str) -> Validator | None:
        variant = self.variants.get((interface_id, event_code))
        return None if variant is None else self.validator(variant.schema_key)


def _resolve(definitions: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = definitions[node["$ref"].removeprefix("#/definitions/")]
    return node


def _walk_property_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                yield from value.keys()
            yield from _walk_property_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_property_names(item)


def _s0(definitions: dict[str, Any], variant: Any) -> dict[str, Any]:
    variant = _resolve(definitions, variant)
    common = _resolve(definitions, variant["properties"]["CommonBlock"])
    return _resolve(definitions, common["properties"]["S0"])


def load_spec(directory: str | Path) -> Spec:
    """Read the unresolved YAML files in ``directory`` and return a :class:`Spec`.

    Raises ``FileNotFoundError`` when the folder lacks ``Interfaces-EventCodes-unresolved.yaml``.
    """
    directory = Path(directory)
    interfaces_file = directory / "Interfaces-EventCodes-unresolved.yaml"
    if not interfaces_file.is_file():
        # Accept the folder above a versioned copy (reference/ holding dip-api-v2.1.0/).
        nested = sorted(directory.glob("*/Interfaces-EventCodes-unresolved.yaml"))
        if len(nested) == 1:
            directory, interfaces_file = nested[0].parent, nested[0]
    if not interfaces_file.is_file():
        raise FileNotFoundError(f"{interfaces_file} not found: is {directory} the spec folder?")
    definitions: dict[str, Any] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*/*.yaml")]):
        if path.name in {"redocly.yaml", "Examples-unresolved.yaml"}:
            continue
        with path.open("rb") as handle:
            document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        schemas = ((document or {}).get("components") or {}).get("schemas") or {}
        key = _file_key(path)
        for name, schema in schemas.items():
            definitions[_def_key(key, name)] = _convert(schema, key)

    variants: dict[tuple[str, str], Variant] = {}
    payload_keys: dict[str, str] = {}
    prefix = _def_key("Interfaces-EventCodes", "")
    for key in list(definitions):
        name = key.removeprefix(prefix)
        if not key.startswith(prefix) or not name.endswith("-Payload"):
            continue
        interface_id = name.removesuffix("-Payload")
        payload_keys[interface_id] = key
        payload = definitions[key]
        members = payload.get("oneOf") or [{"$ref": f"#/definitions/{key}"}]
        for member in members:
            member_key = member["$ref"].removeprefix("#/definitions/")
            s0 = _s0(definitions, definitions[member_key])
            props = s0.get("properties", {})
            versions = tuple(_resolve(definitions, props.get("schemaVersion", {})).get("enum", ()))
            events = _resolve(definitions, props.get("eventCode", {})).get("enum", ())
            for event in events:
                variants[(interface_id, event)] = Variant(
                    interface_id, event, member_key, tuple(v for v in versions if v)
                )

    key_case: dict[str, str] = {}
    for name in _walk_property_names(definitions):
        key_case.setdefault(name.lower(), name)
    # The response-code file holds one enumeration: the codes (found by shape, not by name).
    code_prefix = _def_key("ResponseCodes", "")
    codes_schema: dict[str, Any] = max(
        (d for k, d in definitions.items() if k.startswith(code_prefix) and "enum" in d),
        key=lambda d: len(d["enum"]),
        default={},
    )
    return Spec(
        directory=directory,
        definitions=definitions,
        variants=variants,
        payload_keys=payload_keys,
        key_case=key_case,
        response_codes=tuple(codes_schema.get("enum", ())),
    )
