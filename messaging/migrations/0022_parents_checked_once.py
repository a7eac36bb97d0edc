"""The connection, channel and tenant a received message names are checked once per statement.

A foreign key checks each new row on its own: one query and one row lock per row and key. In a
group of eight pushes of 100 IF-021 messages (the ingest server's group statement, this machine's
PostgreSQL 15), the keys of the message rows to their connection and channel and the key of each
dedupe key to its tenant cost 13 us of the statement's 60 us per message; the five keys of each
raw delivery row (tenant, connection, channel, and the same-tenant pairs) about 75 us per push,
which a single-message push pays whole. Every row of a statement names the same connection and
channel, or a handful: so each statement now checks the distinct (tenant, connection) and
(tenant, channel) pairs of its new rows (a statement trigger over a transition table) and locks
each as a key would (FOR KEY SHARE), refusing with a key's SQLSTATE (23503).

A key also guards its other side: the connection or channel cannot be deleted while a row names
it. Busbar never deletes either, but the database still refuses to: a trigger on each refuses the
delete while a message or a raw payload names it (under the deleting session's row security,
which shows it every row of the tenant whose connection it can see). A delete waits for the lock
of a transaction inserting rows that name it, then sees them.

An update cannot move a message to another connection or channel (its identity is written once,
migration 0002); a raw payload can be changed only by the owner, and a row trigger checks the
update that moves one.
"""

import django.db.models.deletion
from django.db import migrations, models

import core.tenancy

# The refusal a foreign key gives (23503), naming what was not found. A transition table is
# visible only to its trigger's own function, so each trigger function loops over its distinct
# pairs and calls this for each.
PARENTS_CHECK = """
CREATE FUNCTION busbar_parents_check(tenant uuid, connection bigint, channel bigint)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM 1 FROM tenants_connection c
    WHERE c.tenant_id = tenant AND c.id = connection FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'connection % is not a connection of tenant %', connection, tenant
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF channel IS NOT NULL THEN
        PERFORM 1 FROM tenants_channel c
        WHERE c.tenant_id = tenant AND c.id = channel FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'channel % is not a channel of tenant %', channel, tenant
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
END $$
"""

# Migration 0021's check of the raw payloads a statement's new messages name (one query over the
# statement's rows), kept as it was; this migration puts the check of their connections and
# channels before it, and takes it out again on the way back. (Checking each distinct payload
# once, with a UNION of raw_id and source_raw_id, measured slower: 2.97-3.96 ms against
# 2.53-3.35 for a group of eight single-message pushes, and no faster for pushes of 100.)
RAW_PAYLOADS_CHECKED = """
    SELECT n.id, n.raw_id, n.source_raw_id INTO missing FROM busbar_new_messages n
    WHERE (n.raw_id IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM messaging_raw r WHERE r.tenant_id = n.tenant_id AND r.id = n.raw_id))
       OR (n.source_raw_id IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM messaging_raw r
               WHERE r.tenant_id = n.tenant_id AND r.id = n.source_raw_id))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'message % refers to raw payload % that is not its tenant''s',
            missing.id, coalesce(missing.raw_id, missing.source_raw_id)
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$
"""

MESSAGE_CHECK = (
    """
CREATE OR REPLACE FUNCTION busbar_message_raw_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    missing record;
    pair record;
BEGIN
    FOR pair IN SELECT DISTINCT tenant_id, connection_id, channel_id FROM busbar_new_messages
    LOOP
        PERFORM busbar_parents_check(pair.tenant_id, pair.connection_id, pair.channel_id);
    END LOOP;"""
    + RAW_PAYLOADS_CHECKED
)

MESSAGE_CHECK_0021 = (
    """
CREATE OR REPLACE FUNCTION busbar_message_raw_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    missing record;
BEGIN"""
    + RAW_PAYLOADS_CHECKED
)

RAW_CHECK = """
CREATE FUNCTION busbar_raw_parents_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    pair record;
BEGIN
    FOR pair IN SELECT DISTINCT tenant_id, connection_id, channel_id FROM busbar_new_raw LOOP
        PERFORM busbar_parents_check(pair.tenant_id, pair.connection_id, pair.channel_id);
    END LOOP;
    RETURN NULL;
END $$
"""

# An update that moves a raw payload (the owner's alone) is checked row by row.
RAW_CHECK_ROW = """
CREATE FUNCTION busbar_raw_parents_check_row() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM busbar_parents_check(NEW.tenant_id, NEW.connection_id, NEW.channel_id);
    RETURN NULL;
END $$
"""

KEY_CHECK = """
CREATE FUNCTION busbar_inbound_key_tenant_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    tenant uuid;
BEGIN
    FOR tenant IN SELECT DISTINCT tenant_id FROM busbar_new_keys LOOP
        PERFORM 1 FROM tenants_tenant t WHERE t.id = tenant FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenant % does not exist', tenant
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$
"""

# TG_ARGV[0]: the column of messaging_message and messaging_raw that names the deleted row.
DELETE_GUARD = """
CREATE FUNCTION busbar_refuse_delete_while_named() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    named boolean;
BEGIN
    EXECUTE format(
        'SELECT EXISTS (SELECT 1 FROM messaging_message WHERE tenant_id = $1 AND %1$I = $2)'
        ' OR EXISTS (SELECT 1 FROM messaging_raw WHERE tenant_id = $1 AND %1$I = $2)',
        TG_ARGV[0]) INTO named USING OLD.tenant_id, OLD.id;
    IF named THEN
        RAISE EXCEPTION '% % is named by stored messages and cannot be deleted',
            TG_TABLE_NAME, OLD.id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END $$
"""

RAW_KEYS = (
    "messaging_raw_tenant_id_fkey",
    "messaging_raw_connection_id_fkey",
    "messaging_raw_channel_id_fkey",
    "messaging_raw_connection_id_same_tenant",
    "messaging_raw_channel_id_same_tenant",
)
MESSAGE_KEYS = (
    "messaging_message_connection_id_same_tenant",
    "messaging_message_channel_id_same_tenant",
)

FORWARD = [
    *(f"ALTER TABLE messaging_message DROP CONSTRAINT {name}" for name in MESSAGE_KEYS),
    *(f"ALTER TABLE messaging_raw DROP CONSTRAINT {name}" for name in RAW_KEYS),
    "ALTER TABLE messaging_inbound_key DROP CONSTRAINT messaging_inbound_key_tenant_id_fkey",
    PARENTS_CHECK,
    MESSAGE_CHECK,
    RAW_CHECK,
    RAW_CHECK_ROW,
    KEY_CHECK,
    DELETE_GUARD,
    "CREATE TRIGGER messaging_raw_parents_inserted AFTER INSERT ON messaging_raw"
    " REFERENCING NEW TABLE AS busbar_new_raw"
    " FOR EACH STATEMENT EXECUTE FUNCTION busbar_raw_parents_check()",
    "CREATE TRIGGER messaging_raw_parents_updated AFTER UPDATE OF tenant_id, connection_id,"
    " channel_id ON messaging_raw FOR EACH ROW"
    " WHEN ((NEW.tenant_id, NEW.connection_id, NEW.channel_id)"
    " IS DISTINCT FROM (OLD.tenant_id, OLD.connection_id, OLD.channel_id))"
    " EXECUTE FUNCTION busbar_raw_parents_check_row()",
    "CREATE TRIGGER messaging_inbound_key_tenant_inserted AFTER INSERT ON messaging_inbound_key"
    " REFERENCING NEW TABLE AS busbar_new_keys"
    " FOR EACH STATEMENT EXECUTE FUNCTION busbar_inbound_key_tenant_check()",
    "CREATE TRIGGER tenants_connection_named BEFORE DELETE ON tenants_connection"
    " FOR EACH ROW EXECUTE FUNCTION busbar_refuse_delete_while_named('connection_id')",
    "CREATE TRIGGER tenants_channel_named BEFORE DELETE ON tenants_channel"
    " FOR EACH ROW EXECUTE FUNCTION busbar_refuse_delete_while_named('channel_id')",
]

BACKWARD = [
    "DROP TRIGGER IF EXISTS tenants_channel_named ON tenants_channel",
    "DROP TRIGGER IF EXISTS tenants_connection_named ON tenants_connection",
    "DROP TRIGGER IF EXISTS messaging_inbound_key_tenant_inserted ON messaging_inbound_key",
    "DROP TRIGGER IF EXISTS messaging_raw_parents_updated ON messaging_raw",
    "DROP TRIGGER IF EXISTS messaging_raw_parents_inserted ON messaging_raw",
    MESSAGE_CHECK_0021,
    "DROP FUNCTION IF EXISTS busbar_refuse_delete_while_named()",
    "DROP FUNCTION IF EXISTS busbar_inbound_key_tenant_check()",
    "DROP FUNCTION IF EXISTS busbar_raw_parents_check_row()",
    "DROP FUNCTION IF EXISTS busbar_raw_parents_check()",
    "DROP FUNCTION IF EXISTS busbar_parents_check(uuid, bigint, bigint)",
    "ALTER TABLE messaging_inbound_key ADD CONSTRAINT messaging_inbound_key_tenant_id_fkey"
    " FOREIGN KEY (tenant_id) REFERENCES tenants_tenant (id)",
    "ALTER TABLE messaging_raw ADD CONSTRAINT messaging_raw_tenant_id_fkey"
    " FOREIGN KEY (tenant_id) REFERENCES tenants_tenant (id)",
    "ALTER TABLE messaging_raw ADD CONSTRAINT messaging_raw_connection_id_fkey"
    " FOREIGN KEY (connection_id) REFERENCES tenants_connection (id)",
    "ALTER TABLE messaging_raw ADD CONSTRAINT messaging_raw_channel_id_fkey"
    " FOREIGN KEY (channel_id) REFERENCES tenants_channel (id)",
    *(
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_same_tenant"
        f" FOREIGN KEY (tenant_id, {column}) REFERENCES {target} (tenant_id, id) DEFERRABLE"
        for table in ("messaging_raw", "messaging_message")
        for column, target in (
            ("connection_id", "tenants_connection"),
            ("channel_id", "tenants_channel"),
        )
    ),
]


def _unchecked(to: str, *, null: bool = False) -> models.ForeignKey:
    return models.ForeignKey(
        db_constraint=False,
        null=null,
        on_delete=django.db.models.deletion.PROTECT,
        related_name="+",
        to=to,
    )


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
        ("messaging", "0021_message_keys_checked_once"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, BACKWARD)],
            state_operations=[
                migrations.AlterField("rawblob", "tenant", _unchecked_tenant()),
                migrations.AlterField("rawblob", "connection", _unchecked("tenants.connection")),
                migrations.AlterField(
                    "rawblob", "channel", _unchecked("tenants.channel", null=True)
                ),
                migrations.AlterField("inboundkey", "tenant", _unchecked_tenant()),
            ],
        ),
    ]
