"""Two functions called once per row stop pinning ``search_path``, so PostgreSQL can run them
without switching settings around every call.

A function with a ``SET`` clause is called through PostgreSQL's settings save-and-restore on every
call, and a SQL function with one cannot be inlined into the statement that calls it:

- ``busbar_next_id()`` draws every message-store id, one call per row (a raw delivery, a message,
  a dedupe key). Without the clause it is inlined: the statement evaluates its expression
  directly (``EXPLAIN VERBOSE`` shows it). The ingest server's group statement for eight
  single-message pushes took 1.15-1.21 against 1.34-1.49 ms (the fastest of repeated executions
  in three runs each).
- ``busbar_message_write_once()`` runs before every update of a message row (each claim and
  state change of the workers): about a tenth off an UPDATE of 20,000 rows.

Neither needs the pin. Neither is ``SECURITY DEFINER`` (those keep theirs: SECURITY.md), so each
runs with its caller's privileges and the caller could run its body directly anyway. The id's body
names its sequence schema-qualified and otherwise only built-in functions and operators, which
``pg_catalog`` supplies first; the write-once check names no relation at all.
"""

from django.db import migrations

FUNCTIONS = {
    "busbar_next_id()": "pg_catalog, pg_temp",
    "busbar_message_write_once()": "pg_catalog, pg_temp",
}


class Migration(migrations.Migration):
    dependencies = [("messaging", "0022_parents_checked_once")]

    operations = [
        migrations.RunSQL(
            sql=f"ALTER FUNCTION {function} RESET search_path",
            reverse_sql=f"ALTER FUNCTION {function} SET search_path = {path}",
        )
        for function, path in FUNCTIONS.items()
    ]
