"""``python -m dipsim``: see dipsim/README.md."""

from __future__ import annotations

from dipsim.cli import main

main()
