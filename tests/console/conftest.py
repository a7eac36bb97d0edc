"""The console's outbound pages are tested against a real dipsim: its fixtures live with the
messaging tests."""

from __future__ import annotations

from tests.messaging.conftest import committed_world, dipsim  # noqa: F401 (fixtures)
