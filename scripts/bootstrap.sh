#!/usr/bin/env bash
# Create .venv with Python 3.12+ and install the locked dependencies (uv.lock) into it.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local candidate
  for candidate in "${BUSBAR_PYTHON:-}" python3.13 python3.12 python3 \
      "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$candidate" 2>/dev/null || echo "$candidate"
      return 0
    fi
  done
  return 1
}

if ! python=$(find_python); then
  echo "busbar: Python 3.12 or newer is needed and none was found." >&2
  echo "        Install one (e.g. 'pyenv install 3.13' or your system's python3.13 package)," >&2
  echo "        or point BUSBAR_PYTHON at it, then run this again." >&2
  exit 1
fi

if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
  echo "busbar: .venv has an old Python; recreating it"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "busbar: creating .venv with $("$python" --version) at $python"
  "$python" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.9"
fi
# --frozen: install exactly what uv.lock pins, never re-resolve.
UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --frozen --python .venv/bin/python
