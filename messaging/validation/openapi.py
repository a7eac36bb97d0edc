"""Read the official DIP OpenAPI specification (the "unresolved" YAML files) into JSON schemas.

The specification is Elexon's material and is never copied into the project: ``import_dip_spec``
reads it from a folder the user names. Its files refer to each other with absolute
``raw.githubusercontent.com`` URLs; these are mapped onto the files in the same folder (nothing is
fetched). OpenAPI 3.0 ``nullable: true`` becomes JSON Schema's ``"type": [..., "null"]``, and
OpenAPI-only keywords (``example``, ``discriminator``...) are dropped.

The result is one self-contained draft-4 schema per interface variant, keyed by
``(interface id, schema version, event code)``: each interface's payload is
``components.schemas["IF-0xx-Payload"]``, often a ``oneOf`` of one schema per event code, whose
``CommonBlock.S0`` enumerates the schema versions and event codes it accepts. A variant whose S0
names no event code is stored once per interface with an empty event code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DRAFT4 = "http://json-schema.org/draft-04/schema#"
_REF_RE = re.compile(
    r"^(?:[a-z]+://[^#]*/)?(?P<file>[^/#]*\.yaml)?#/components/schemas/(?P<name>.+)$"
)
_DROPPED = {"example", "examples", "discriminator", "xml", "externalDocs", "nullable", "deprecated"}
# Formats the DIP's schemas name that carry no check a recipient could rely on ("byte" is base64,
# "uuid" is not a draft-4 format): dropped rather than guessed at.
_KEPT_FORMATS = {"date-time", "date", "email", "uri", "ipv4", "ipv6"}
INTERFACES_FILE = "Interfaces-EventCodes-unresolved.yaml"


class SpecError(ValueError):
    """The folder is not a DIP specification this reader understands; the message says why."""


@dataclass(frozen=True)
class VariantSchema:
    """One resolved schema: the key it is registered under and the schema itself."""

    interface_id: str
    schema_version: str
    event_code: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class ReadSpec:
    """What :func:`read_spec` found: the folder, its API version, a digest of its files, variants."""

    directory: Path
    api_version: str
    digest: str
    variants: list[VariantSchema]


def _file_key(name: str) -> str:
    return name.removesuffix(".yaml").removesuffix("-unresolved")


def _convert(node: Any, file_key: str) -> Any:
    """A JSON Schema (draft 4) copy of an OpenAPI 3.0 schema node, references made local."""
    if isinstance(node, list):
        return [_convert(item, file_key) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        match = _REF_RE.match(str(node["$ref"]))
        if match is None:
            raise SpecError(f"unsupported $ref {node['$ref']!r} in {file_key}")
        target = _file_key(match.group("file")) if match.group("file") else file_key
        # OpenAPI 3.0 ignores the siblings of a $ref (descriptions, mostly): so does this.
        return {"$ref": f"#/definitions/{target}__{match.group('name')}"}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key in {"properties", "patternProperties", "definitions"} and isinstance(value, dict):
            out[key] = {name: _convert(sub, file_key) for name, sub in value.items()}
        elif key == "format" and value not in _KEPT_FORMATS:
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


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.removeprefix("#/definitions/")
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def self_contained(definitions: dict[str, Any], key: str) -> dict[str, Any]:
    """A schema for definition ``key`` carrying only the definitions it reaches."""
    reached: dict[str, Any] = {}
    todo = [key]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        if name not in definitions:
            raise SpecError(f"reference to a missing schema {name!r}")
        reached[name] = definitions[name]
        todo.extend(_refs(definitions[name]))
    return {"$schema": DRAFT4, "$ref": f"#/definitions/{key}", "definitions": reached}


def _deref(definitions: dict[str, Any], node: Any) -> Any:
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        node = definitions[node["$ref"].removeprefix("#/definitions/")]
        seen += 1
        if seen > 50:
            raise SpecError("a $ref cycle")
    return node


def _s0_enums(definitions: dict[str, Any], variant: Any) -> tuple[list[str], list[str]]:
    """(schema versions, event codes) enumerated in a variant's ``CommonBlock.S0``."""
    variant = _deref(definitions, variant)
    common = _deref(definitions, (variant.get("properties") or {}).get("CommonBlock"))
    s0 = _deref(definitions, ((common or {}).get("properties") or {}).get("S0"))
    props = (s0 or {}).get("properties") or {}
    versions = _deref(definitions, props.get("schemaVersion") or {}).get("enum") or []
    events = _deref(definitions, props.get("eventCode") or {}).get("enum") or []
    return [v for v in versions if isinstance(v, str)], [e for e in events if isinstance(e, str)]


def _load_yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with path.open("rb") as handle:
            return yaml.load(handle, Loader=loader)
    except yaml.YAMLError as err:
        raise SpecError(f"{path.name} is not valid YAML: {err}") from err


def find_spec_folder(directory: str | Path) -> Path:
    """The folder holding the specification: ``directory`` itself or its one versioned child.

    Raises :class:`SpecError` when neither holds ``Interfaces-EventCodes-unresolved.yaml``.
    """
    directory = Path(directory)
    if (directory / INTERFACES_FILE).is_file():
        return directory
    nested = sorted(directory.glob(f"*/{INTERFACES_FILE}"))
    if len(nested) == 1:
        return nested[0].parent
    if len(nested) > 1:
        raise SpecError(
            f"{directory} holds several specifications: name one of {[str(p.parent) for p in nested]}"
        )
    raise SpecError(f"{directory} holds no {INTERFACES_FILE}: is it the DIP specification folder?")


def read_spec(directory: str | Path) -> ReadSpec:
    """Read every schema of the specification in ``directory`` and resolve the interface variants.

    Raises :class:`SpecError` (a ``ValueError``) naming the problem when the folder is not a DIP
    specification, a file is not YAML, or a reference points at nothing.
    """
    folder = find_spec_folder(directory)
    definitions: dict[str, Any] = {}
    digest = hashlib.sha256()
    api_version = ""
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*/*.yaml")])
    for path in paths:
        if path.name in {"redocly.yaml", "Examples-unresolved.yaml"}:
            continue
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
        document = _load_yaml(path) or {}
        if not isinstance(document, dict):
            raise SpecError(f"{path.name} is not an OpenAPI document")
        if path.name == "SubmitEvents-unresolved.yaml":
            api_version = str((document.get("info") or {}).get("version") or "")
        schemas = (document.get("components") or {}).get("schemas") or {}
        key = _file_key(path.name)
        for name, schema in schemas.items():
            definitions[f"{key}__{name}"] = _convert(schema, key)

    prefix = "Interfaces-EventCodes__"
    variants: list[VariantSchema] = []
    for key in sorted(definitions):
        name = key.removeprefix(prefix)
        if not key.startswith(prefix) or not name.endswith("-Payload"):
            continue
        interface_id = name.removesuffix("-Payload")
        members = definitions[key].get("oneOf") or [{"$ref": f"#/definitions/{key}"}]
        for member in members:
            member_key = member["$ref"].removeprefix("#/definitions/") if "$ref" in member else key
            versions, events = _s0_enums(definitions, definitions[member_key])
            schema = self_contained(definitions, member_key)
            for version in versions or [""]:
                for event in events or [""]:
                    variants.append(VariantSchema(interface_id, version, event, schema))
    if not variants:
        raise SpecError(f"{folder} defines no interface payloads (no IF-xxx-Payload schemas)")
    return ReadSpec(folder, api_version, digest.hexdigest(), variants)
