"""manage.py compare_spec_versions --candidate NAME [--base NAME] FILE...: what would fail under
another spec version. Each FILE holds a payload, a wire item ``{"payload": ...}`` or a JSON array of
them (a DIP delivery body)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging.validation.compare import compare_spec_versions
from messaging.validation.selectors import (
    UnknownSpecVersion,
    default_spec_name,
    get_registry_by_name,
)
from messaging.validation.types import ValidationContext


def read_messages(paths: list[str]) -> list[tuple[str, Any]]:
    """``(label, payload)`` for every message in the files (a folder means its ``*.json``)."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    out: list[tuple[str, Any]] = []
    for path in files:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:
            raise CommandError(f"{path}: {err}") from err
        items = data if isinstance(data, list) else [data]
        out.extend(
            (f"{path}[{i}]" if isinstance(data, list) else str(path), item)
            for i, item in enumerate(items)
        )
    return out


class Command(BaseCommand):
    help = "Validate messages under two spec versions side by side and report the differences."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", help="JSON files or folders of them")
        parser.add_argument("--candidate", required=True, help="the spec version to try")
        parser.add_argument(
            "--base", help="the version to compare with (default: the default version)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            base = get_registry_by_name(options["base"] or default_spec_name())
            candidate = get_registry_by_name(options["candidate"])
        except UnknownSpecVersion as err:
            raise CommandError(str(err)) from err
        messages = read_messages(options["files"])
        # Only the schemas differ between versions: the connection-dependent stages do not run.
        context = ValidationContext(dip_ids=frozenset(), role="", environment="")
        result = compare_spec_versions(
            messages=messages, context=context, base=base, candidate=candidate
        )
        self.stdout.write(
            f"{result.total} messages: {len(result.newly_failing)} would fail under {result.candidate}"
            f" and pass under {result.base}; {len(result.newly_passing)} the other way;"
            f" {len(result.differences)} differ in any finding"
        )
        for diff in result.differences:
            verdict = f"{'ok' if diff.base_ok else 'invalid'} -> {'ok' if diff.candidate_ok else 'invalid'}"
            self.stdout.write(f"{diff.label}: {verdict}")
            for finding in diff.only_candidate:
                self.stdout.write(
                    f"  + {finding.severity} {finding.code} {finding.path}: {finding.text}"
                )
            for finding in diff.only_base:
                self.stdout.write(
                    f"  - {finding.severity} {finding.code} {finding.path}: {finding.text}"
                )
