"""Schema registries: the schemas of one spec version keyed by (interface, schema version, event
code), with validators compiled on first use and kept for the life of the registry."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from messaging.validation import schemas as builtin
from messaging.validation.openapi import ReadSpec

SchemaKey = tuple[str, str, str]


class SchemaUnusable(ValueError):
    """A registered schema that cannot be compiled (the message names the key and the reason)."""


@dataclass(frozen=True)
class CompiledSchema:
    """A compiled validator and the key it was registered under."""

    key: SchemaKey
    validator: Any  # a jsonschema_rs validator: is_valid() and iter_errors()


class SchemaRegistry:
    """The schemas of one spec version (``name``), e.g. ``busbar-builtin`` or ``2.1.0``.

    A variant is looked up by its exact key; an interface whose schema does not depend on the
    event code is registered with an empty event code and serves every event code. Validators are
    compiled once per registry (thread-safe) and reused; registries themselves are cached per spec
    version by :func:`messaging.validation.selectors.get_registry`.
    """

    def __init__(self, name: str, entries: Mapping[SchemaKey, dict[str, Any]]) -> None:
        self.name = name
        self._schemas = dict(entries)
        self._compiled: dict[SchemaKey, CompiledSchema] = {}
        self._lock = threading.Lock()
        self._versions: dict[str, set[str]] = {}
        self._events: dict[tuple[str, str], set[str]] = {}
        for interface_id, version, event in self._schemas:
            self._versions.setdefault(interface_id, set()).add(version)
            self._events.setdefault((interface_id, version), set()).add(event)

    def __repr__(self) -> str:
        return f"<SchemaRegistry {self.name}: {len(self._schemas)} schemas>"

    @classmethod
    def builtin(cls) -> SchemaRegistry:
        return cls(builtin.SPEC_NAME, builtin.builtin_schemas())

    @classmethod
    def from_spec(cls, spec: ReadSpec, *, name: str) -> SchemaRegistry:
        return cls(
            name,
            {(v.interface_id, v.schema_version, v.event_code): v.schema for v in spec.variants},
        )

    @classmethod
    def from_rows(
        cls, name: str, rows: Iterable[tuple[str, str, str, dict[str, Any]]]
    ) -> SchemaRegistry:
        return cls(name, {(i, v, e): s for i, v, e, s in rows})

    def keys(self) -> list[SchemaKey]:
        return sorted(self._schemas)

    def interfaces(self) -> list[str]:
        return sorted(self._versions)

    def schema_versions(self, interface_id: str) -> list[str]:
        return sorted(self._versions.get(interface_id, ()))

    def event_codes(self, interface_id: str, schema_version: str) -> list[str]:
        return sorted(e for e in self._events.get((interface_id, schema_version), ()) if e)

    def resolve(self, interface_id: str, schema_version: str, event_code: str) -> SchemaKey | None:
        """The key that serves this message: the exact variant, else the interface-wide schema."""
        for key in ((interface_id, schema_version, event_code), (interface_id, schema_version, "")):
            if key in self._schemas:
                return key
        return None

    def schema(self, key: SchemaKey) -> dict[str, Any]:
        return self._schemas[key]

    def compiled(self, key: SchemaKey) -> CompiledSchema:
        """The compiled validator for ``key`` (compiled on first use).

        Raises ``KeyError`` for an unknown key and :class:`SchemaUnusable` for a schema the
        validator cannot compile.
        """
        found = self._compiled.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._compiled.get(key)
            if found is None:
                try:
                    validator = jsonschema_rs.Draft4Validator(self._schemas[key])
                except (jsonschema_rs.ValidationError, ValueError) as err:
                    raise SchemaUnusable(f"{self.name} {key}: {err}") from err
                found = CompiledSchema(key, validator)
                self._compiled[key] = found
        return found
