"""A message's timeline rows and findings name their message, checked once per statement.

Every state move inserts one timeline row per message moved, and a validation run one finding row
per finding: each row carried a key to the partitioned message table and one to its tenant. The
key to the message was the costliest part of a state move: `EXPLAIN ANALYZE` of a move of 500
messages (the inbound worker's round, this machine's PostgreSQL 15) spent 43 of its 71 ms in that
key's checks, about 86 us per row, and the tenant's key 4 ms more. A key is checked row by row,
each check a query planned against the partitioned parent and pruned at run time; one query per
statement over the statement's new rows (a transition table) does the same check for a whole
move at once, as migration 0021 does for a message's raw payload. The tenant's key is redundant:
the message found is the same tenant's, and a message names its tenant's connection (0022).

The check probes each row's message by its key (a lateral subquery with a LIMIT, which the
planner must run per row). Written as NOT EXISTS, it let the planner read every message of the
tenant once and compare each new row with all of them (row security's tenant condition makes that
set look small): 124 ms for 500 rows against 2,000 stored messages. The same flaw was in 0021's
check of a new message's raw payload, rewritten here to probe each distinct payload once.

The check runs under the inserting session's row security, so the message must also be one the
session sees: a stricter rule than a key's, which looks past row security.

A key also guards its other side: refusing to delete a message that has a timeline. Messages are
never deleted (the runtime role cannot: migration 0002's trigger refuses it; retention empties raw
bodies and keeps every row), so that half has nothing left to guard.
"""

from importlib import import_module

import django.db.models.deletion
from django.db import migrations, models

import core.tenancy

TABLES = ("messaging_transition", "messaging_finding")

# The refusal is the one a foreign key gives (23503), naming the row and the message.
CHECK = """
CREATE FUNCTION busbar_message_named_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    missing record;
BEGIN
    SELECT n.id, n.message_id INTO missing FROM busbar_new_rows n
    LEFT JOIN LATERAL (
        SELECT true AS found FROM messaging_message m
        WHERE m.tenant_id = n.tenant_id AND m.id = n.message_id LIMIT 1
    ) m ON true
    WHERE m.found IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '% row % refers to message % that is not its tenant''s',
            TG_TABLE_NAME, missing.id, missing.message_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$
"""

# Migration 0021's check of the raw payloads a statement's new messages name, rewritten the same
# way: one probe by key per distinct payload. Its NOT EXISTS form let the planner hash every raw
# payload of the tenant once per statement instead (row security's tenant condition makes that
# set look small), so a push's cost grew with all its tenant had stored: 3.4 ms per statement at
# 5,000 payloads, read from PostgreSQL's plan.
RAW_PAYLOADS_PROBED = """
CREATE OR REPLACE FUNCTION busbar_message_raw_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    missing record;
    pair record;
BEGIN
    FOR pair IN SELECT DISTINCT tenant_id, connection_id, channel_id FROM busbar_new_messages
    LOOP
        PERFORM busbar_parents_check(pair.tenant_id, pair.connection_id, pair.channel_id);
    END LOOP;
    SELECT p.id, p.raw_id INTO missing
    FROM (
        SELECT min(n.id) AS id, n.tenant_id, x.raw_id
        FROM busbar_new_messages n
        CROSS JOIN LATERAL (VALUES (n.raw_id), (n.source_raw_id)) AS x(raw_id)
        WHERE x.raw_id IS NOT NULL
        GROUP BY n.tenant_id, x.raw_id
    ) p
    LEFT JOIN LATERAL (
        SELECT true AS found FROM messaging_raw r
        WHERE r.tenant_id = p.tenant_id AND r.id = p.raw_id LIMIT 1
    ) r ON true
    WHERE r.found IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'message % refers to raw payload % that is not its tenant''s',
            missing.id, missing.raw_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$
"""

FORWARD = [
    *(
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_{key}_fkey"
        for table in TABLES
        for key in ("tenant_id", "tenant_id_message_id")
    ),
    CHECK,
    RAW_PAYLOADS_PROBED,
    *(
        f"CREATE TRIGGER {table}_message_named AFTER INSERT ON {table}"
        " REFERENCING NEW TABLE AS busbar_new_rows"
        " FOR EACH STATEMENT EXECUTE FUNCTION busbar_message_named_check()"
        for table in TABLES
    ),
]

BACKWARD = [
    import_module("messaging.migrations.0022_parents_checked_once").MESSAGE_CHECK,
    *(f"DROP TRIGGER IF EXISTS {table}_message_named ON {table}" for table in TABLES),
    "DROP FUNCTION IF EXISTS busbar_message_named_check()",
    *(
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_tenant_id_fkey"
        " FOREIGN KEY (tenant_id) REFERENCES tenants_tenant (id)"
        for table in TABLES
    ),
    *(
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_tenant_id_message_id_fkey"
        " FOREIGN KEY (tenant_id, message_id) REFERENCES messaging_message (tenant_id, id)"
        for table in TABLES
    ),
]


def _unchecked_tenant() -> models.ForeignKey:
    return models.ForeignKey(
        db_constraint=False,
        default=core.tenancy.current_tenant_id,
        editable=False,
        on_delete=django.db.models.deletion.PROTECT,
        related_name="+",
        to="tenants.tenant",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0024_raw_rows_kept_whole"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, BACKWARD)],
            state_operations=[
                migrations.AlterField("transition", "tenant", _unchecked_tenant()),
                migrations.AlterField("finding", "tenant", _unchecked_tenant()),
            ],
        ),
    ]
