"""Side by side: validate the same messages under two spec versions and report what changes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from messaging.validation.engine import validate_batch
from messaging.validation.registry import SchemaRegistry
from messaging.validation.types import Finding, ValidationContext


@dataclass(frozen=True)
class Difference:
    """One message whose findings differ: ``label`` names it (a file, a message id)."""

    label: str
    base_ok: bool
    candidate_ok: bool
    only_base: tuple[Finding, ...]
    only_candidate: tuple[Finding, ...]


@dataclass
class Comparison:
    base: str
    candidate: str
    total: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def newly_failing(self) -> list[Difference]:
        """Messages valid under the base version that the candidate refuses."""
        return [d for d in self.differences if d.base_ok and not d.candidate_ok]

    @property
    def newly_passing(self) -> list[Difference]:
        return [d for d in self.differences if not d.base_ok and d.candidate_ok]


def _identity(finding: Finding) -> tuple[str, str, str, str]:
    # The rule names its spec version and texts name the registry: compare what was found where.
    return (str(finding.stage), str(finding.severity), finding.code, finding.path)


def compare_spec_versions(
    *,
    messages: Iterable[tuple[str, Any]],
    context: ValidationContext,
    base: SchemaRegistry,
    candidate: SchemaRegistry,
    stages: tuple[str, ...] = ("syntactic",),
) -> Comparison:
    """Validate each ``(label, payload)`` under ``base`` and ``candidate``; keep the differences.

    By default only the syntactic stage runs (the schemas are what a spec version changes).
    """
    labelled = list(messages)
    payloads = [payload for _, payload in labelled]
    before = validate_batch(payloads, context=context, registry=base, stages=stages)
    after = validate_batch(payloads, context=context, registry=candidate, stages=stages)
    out = Comparison(base=base.name, candidate=candidate.name, total=len(labelled))
    for (label, _), old, new in zip(labelled, before, after, strict=True):
        old_ids = {_identity(f) for f in old.findings}
        new_ids = {_identity(f) for f in new.findings}
        if old.ok == new.ok and old_ids == new_ids:
            continue
        out.differences.append(
            Difference(
                label=label,
                base_ok=old.ok,
                candidate_ok=new.ok,
                only_base=tuple(f for f in old.findings if _identity(f) not in new_ids),
                only_candidate=tuple(f for f in new.findings if _identity(f) not in old_ids),
            )
        )
    return out
