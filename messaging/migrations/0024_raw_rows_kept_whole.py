"""Raw rows stay whole in their page up to a page's size, instead of being toasted at 2 KB.

PostgreSQL toasts any row larger than about 2 KB: it tries to compress its largest values (pglz)
and moves what is still too large out of line, into the table's TOAST relation (another heap row
and index entry per value). A single-message push's raw row is about 3.4 KB: its body, already
compressed by zstd (about 0.9 KB), its headers (about 2 KB, most of it the DIP's signing
certificate in base64) and its answer. So every such push paid for pglz failing on bytes that do
not compress, then for its headers written out of line, and every later read of the push paid for
fetching them back.

``toast_tuple_target`` at its largest (8160 bytes) leaves a row that fits a page alone: nothing
is compressed or moved. A larger row (a batch's body) is still moved out of line, as before.
Measured with ``EXPLAIN ANALYZE`` of the ingest server's group statement for four single-message
pushes (the bench database, PostgreSQL 15, two runs each): the raw rows' insert took 0.125
against 0.32-0.34 ms, the whole statement 0.82-0.89 against 1.39-1.51 ms.

The parameter belongs to each partition (PostgreSQL takes no storage parameters on a partitioned
table), so this sets it on every partition of ``messaging_raw`` and has
``busbar_ensure_partitions`` create the next ones with it. The other tables of the store keep
PostgreSQL's default: their rows are narrow, and a long text among them (a finding's detail, an
error) is better compressed. The function is changed in place, from its definition in the
catalogue: it names the deployment's roles, which its first migration took from the settings.
"""

from django.db import migrations

FUNCTION = "busbar_ensure_partitions(integer)"
TARGET = "toast_tuple_target = 8160"
# The end of the partition function's CREATE TABLE format string (migration 0002), before and
# after: the same, with the storage parameter for the raw table's partitions.
CREATE_PLAIN = "FOR VALUES FROM (%s) TO (%s)',"
CREATE_WHOLE = (
    "FOR VALUES FROM (%s) TO (%s)'"
    f" || CASE v_table WHEN 'messaging_raw' THEN ' WITH ({TARGET})' ELSE '' END,"
)


def _partitions(cursor) -> list[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'public.messaging_raw'::regclass ORDER BY c.relname"
    )
    return [row[0] for row in cursor.fetchall()]


def _rewrite_function(cursor, old: str, new: str) -> None:
    """Replace ``old`` with ``new`` in the partition function's own definition (exactly once)."""
    cursor.execute("SELECT pg_get_functiondef(%s::regprocedure)", [FUNCTION])
    definition = cursor.fetchone()[0]
    if definition.count(old) != 1:
        raise RuntimeError(f"{FUNCTION} does not create partitions as this migration expects")
    cursor.execute(definition.replace(old, new))


def keep_rows_whole(apps, schema_editor) -> None:
    quote = schema_editor.connection.ops.quote_name
    with schema_editor.connection.cursor() as cursor:
        for partition in _partitions(cursor):
            cursor.execute(f"ALTER TABLE public.{quote(partition)} SET ({TARGET})")
        _rewrite_function(cursor, CREATE_PLAIN, CREATE_WHOLE)


def toast_at_two_kilobytes(apps, schema_editor) -> None:
    quote = schema_editor.connection.ops.quote_name
    with schema_editor.connection.cursor() as cursor:
        for partition in _partitions(cursor):
            cursor.execute(f"ALTER TABLE public.{quote(partition)} RESET (toast_tuple_target)")
        _rewrite_function(cursor, CREATE_WHOLE, CREATE_PLAIN)


class Migration(migrations.Migration):
    dependencies = [("messaging", "0023_hot_functions_unpinned")]

    operations = [migrations.RunPython(keep_rows_whole, toast_at_two_kilobytes)]
