"""Every environment variable the code reads is documented in docs/environment.md, and every
variable documented there is read somewhere: a new undocumented variable fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ["core", "tenants", "messaging", "console", "dipsim", "tests", "manage.py"]
SETTINGS_HELPERS = {"env", "envbool", "envint", "envlist"}
REFERENCE = ROOT / "docs" / "environment.md"


def _reads_environment(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in SETTINGS_HELPERS
    if isinstance(func, ast.Attribute):
        owner = ast.unparse(func.value)
        return (owner == "os.environ" and func.attr in {"get", "setdefault", "pop"}) or (
            owner == "os" and func.attr == "getenv"
        )
    return False


def variables_read(tree: ast.AST) -> set[str]:
    """Names passed as literals to the settings helpers, os.environ and os.getenv."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if _reads_environment(node.func):
                found.add(first.value)
        elif (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
        ):
            found.add(node.slice.value)
    return found


def code_variables() -> dict[str, str]:
    where: dict[str, str] = {}
    for entry in SCANNED:
        path = ROOT / entry
        files = [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))
        for file in files:
            for name in variables_read(ast.parse(file.read_text(), filename=str(file))):
                where.setdefault(name, str(file.relative_to(ROOT)))
    return where


def documented() -> set[str]:
    names: set[str] = set()
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_the_scanner_sees_what_settings_read():
    # Guard against a scanner that silently finds nothing.
    found = code_variables()
    assert {"DJANGO_SECRET_KEY", "BUSBAR_DATABASE_URL", "BUSBAR_TRUSTED_PROXIES"} <= set(found)
    assert variables_read(ast.parse("import os\nos.environ['X_Y']\nos.getenv('Z_W')")) == {
        "X_Y",
        "Z_W",
    }


def test_every_variable_the_code_reads_is_documented():
    missing = {name: file for name, file in code_variables().items() if name not in documented()}
    assert not missing, f"document these in docs/environment.md: {missing}"


def test_every_documented_variable_is_read_somewhere():
    texts = "\n".join(
        path.read_text(errors="replace")
        for pattern in ("**/*.py", "platform/**/*", "docker-compose.yml", "Makefile")
        for path in ROOT.glob(pattern)
        if path.is_file() and ".venv" not in path.parts and path != REFERENCE
    )
    stale = sorted(name for name in documented() if name not in texts)
    assert not stale, f"documented but read nowhere (remove from docs/environment.md): {stale}"
