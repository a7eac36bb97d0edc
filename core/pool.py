"""What a pooled database connection goes through on its way back to the pool.

Kept apart from ``core.db`` because settings import it, before Django is set up.
"""

from __future__ import annotations

from typing import Any


def reset_pooled_connection(conn: Any) -> None:
    """psycopg_pool's ``reset`` callback: forget everything the last user's session set.

    A connection goes back to the pool after every request and task. ``DISCARD ALL`` drops
    session-level settings (``SET``, ``set_config(..., false)``, such as a session-wide
    ``app.tenant_id``), temporary objects, prepared statements, advisory locks, LISTENs and any
    ``SET ROLE``, so the next user starts clean. The pool hands the connection over idle and does
    not lend it again before this returns. Start-up options (the UTC time zone in settings) are
    what RESET goes back to, so Django's own session configuration survives.
    """
    if not conn.autocommit:
        conn.autocommit = True  # DISCARD ALL cannot run inside a transaction block
    conn.execute("DISCARD ALL")
