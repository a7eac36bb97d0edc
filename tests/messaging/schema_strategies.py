"""Hypothesis strategies for the instances of a (resolved, draft-4) JSON schema, and mutations of
an instance that the schema should refuse. Written for the DIP's schemas: ``$ref`` into local
definitions, closed objects, enums, patterns, lengths, bounded arrays, nullable type lists."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

MAX_ITEMS = 2  # keeps IF-021's 200 x 48 arrays small; the bounds themselves are tested apart


def resolve(root: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = root["definitions"][node["$ref"].removeprefix("#/definitions/")]
    return node


def strategy(root: dict[str, Any], node: Any = None) -> st.SearchStrategy[Any]:
    node = resolve(root, root if node is None else node)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    for combinator in ("oneOf", "anyOf"):
        if combinator in node:
            return st.one_of([strategy(root, sub) for sub in node[combinator]])
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([strategy(root, {**node, "type": k}) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        step = node.get("multipleOf", 1)
        low, high = node.get("minimum", -(10**6)), node.get("maximum", 10**6)
        return st.integers(low, high).filter(lambda n: n % step == 0)
    if kind == "number":
        return st.floats(
            node.get("minimum"), node.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "string":
        low, high = node.get("minLength", 0), node.get("maxLength")
        if "pattern" in node:
            # JSON Schema patterns are ECMA-262: \\d is [0-9], not every Unicode digit as in
            # Python's re (which the reference validator uses); generate ASCII digits only.
            return st.from_regex(re.compile(node["pattern"], re.ASCII), fullmatch=True).filter(
                lambda s: len(s) >= low and (high is None or len(s) <= high)
            )
        return st.text(min_size=low, max_size=min(high if high is not None else 30, 60))
    if kind == "array":
        low = node.get("minItems", 0)
        high = max(low, min(node.get("maxItems", MAX_ITEMS), MAX_ITEMS))
        return st.lists(strategy(root, node.get("items", {})), min_size=low, max_size=high)
    if kind == "object" or "properties" in node:
        props = node.get("properties", {})
        required = set(node.get("required", []))
        base = st.fixed_dictionaries(
            {k: strategy(root, v) for k, v in props.items() if k in required},
            optional={k: strategy(root, v) for k, v in props.items() if k not in required},
        )
        if node.get("additionalProperties", True) is not False and props:
            # An open object: sometimes carry a key the schema does not name.
            return st.one_of(base, base.map(lambda d: {**d, "zzExtraKey": "extra"}))
        return base
    return st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))


@dataclass(frozen=True)
class Mutation:
    """A change the schema forbids: its ``kind``, the path it touches and the mutated message."""

    kind: str
    path: tuple[Any, ...]
    instance: Any


def _changes(
    root: dict[str, Any], value: Any, node: Any, path: tuple[Any, ...]
) -> Iterator[tuple[str, tuple[Any, ...], Any]]:
    """``(kind, path, new value at path)`` for each single change that ``node`` clearly forbids."""
    node = resolve(root, node)
    if any(k in node for k in ("oneOf", "anyOf", "allOf")):
        return  # which branch governs is ambiguous: mutate only below plain nodes
    if isinstance(value, dict) and "properties" in node:
        for key in node.get("required", []):
            if key in value:
                yield "drop required", (*path, key), {k: v for k, v in value.items() if k != key}
        if node.get("additionalProperties") is False:
            yield "unknown key", (*path, "unknownKey"), {**value, "unknownKey": 1}
        for key, sub in value.items():
            if key in node["properties"]:
                yield from _changes(root, sub, node["properties"][key], (*path, key))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        if value and node.get("maxItems", 10**6) <= 60:
            yield "too many items", path, value + [value[0]] * (node["maxItems"] + 1 - len(value))
        for i, item in enumerate(value[:1]):
            yield from _changes(root, item, node["items"], (*path, i))
    elif isinstance(value, str):
        if "enum" in node:
            yield "outside enum", path, "\u00a7not-in-enum"
        elif "maxLength" in node:
            yield "too long", path, "9" * (node["maxLength"] + 1)
        if "pattern" in node:
            yield "breaks pattern", path, value + "\u00a7"


def all_mutations(root: dict[str, Any], instance: Any) -> list[Mutation]:
    """Every single forbidden change of ``instance`` under schema ``root``, applied to a copy."""
    out = []
    for kind, path, new in _changes(root, instance, root, ()):
        changed = copy.deepcopy(instance)
        if not path or (kind in {"drop required", "unknown key"} and len(path) == 1):
            changed = new
        else:
            parent_path = path[:-1] if kind in {"drop required", "unknown key"} else path
            target = changed
            for part in parent_path[:-1]:
                target = target[part]
            target[parent_path[-1]] = new
        out.append(Mutation(kind, path, changed))
    return out
