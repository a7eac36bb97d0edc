"""The message store both directions share (DESIGN section 4; messaging/store/__init__.py).

The tables are written in SQL because Django cannot declare what they need: partitioning by id range
(ids are time-ordered, messaging.store.ids), composite keys led by tenant_id with composite foreign
keys between them, column-level UPDATE grants and write-once triggers. The model state is declared
beside them (SeparateDatabaseAndState) so the ORM can read them.
"""

from __future__ import annotations

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import core.tenancy
from core.db import EnableTenantRLS
from messaging.store.ids import ID_EPOCH_MS, SEQUENCE_BITS

PARTITIONED = ["messaging_raw", "messaging_message", "messaging_transition", "messaging_finding"]

# Columns a worker may change on a message; the others are its identity and never change once set.
MESSAGE_WORK_COLUMNS = [
    "state",
    "attempts",
    "lease_until",
    "next_attempt_at",
    "state_changed_at",
    "last_error",
    "swept_at",
]
# Set once (outbound messages get their final bytes and the DIP's transaction id after creation).
MESSAGE_WRITE_ONCE_COLUMNS = [
    "raw_id",
    "raw_offset",
    "raw_length",
    "sha256",
    "transaction_id",
    "sender_unique_reference",
]

SUPPORT_MESSAGE_COLUMNS = [
    "tenant_id",
    "id",
    "direction",
    "connection_id",
    "channel_id",
    "raw_id",
    "interface_id",
    "schema_version",
    "event_code",
    "transaction_id",
    "sender_unique_reference",
    "correlation_id",
    "created_at",
    *MESSAGE_WORK_COLUMNS,
]
SUPPORT_RAW_COLUMNS = [
    "tenant_id",
    "id",
    "kind",
    "direction",
    "connection_id",
    "channel_id",
    "created_at",
    "body_sha256",
    "body_size",
    "message_count",
    "response_status",
]


def functions_sql() -> list[str]:
    runtime, support = settings.DB_RUNTIME_ROLE, settings.DB_SUPPORT_ROLE
    partitioned = ", ".join(f"'{table}'" for table in PARTITIONED)
    return [
        "CREATE SEQUENCE busbar_id_seq",
        # Milliseconds since the epoch in the high bits, a sequence in the low ones: ids sort by
        # time, which is what lets the store partition by id. Not SECURITY DEFINER: the caller's
        # USAGE on the sequence is what counts.
        f"""
        CREATE FUNCTION busbar_next_id() RETURNS bigint LANGUAGE sql VOLATILE
        SET search_path = pg_catalog, pg_temp AS $$
            SELECT ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - {ID_EPOCH_MS})
                    << {SEQUENCE_BITS})
                   | (nextval('public.busbar_id_seq') & {(1 << SEQUENCE_BITS) - 1})
        $$
        """,
        f'GRANT USAGE ON SEQUENCE busbar_id_seq TO "{runtime}"',
        # Monthly partitions, created ahead by a beat task. The runtime role may run this and only
        # this DDL: fixed tables, bounds computed here, nothing taken from the caller but a count.
        # Partitions are reachable only through their parent (whose RLS applies): the roles lose
        # every privilege on them, and each is RLS-forced with no policy in case one is granted.
        f"""
        CREATE FUNCTION busbar_ensure_partitions(p_months_ahead integer)
        RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_table text;
            v_month date;
            v_low bigint;
            v_high bigint;
            v_name text;
            v_created integer := 0;
        BEGIN
            IF p_months_ahead < 0 OR p_months_ahead > 24 THEN
                RAISE EXCEPTION 'months ahead must be between 0 and 24, not %', p_months_ahead;
            END IF;
            FOREACH v_table IN ARRAY ARRAY[{partitioned}] LOOP
                FOR i IN -1..p_months_ahead LOOP
                    v_month := (date_trunc('month', now() AT TIME ZONE 'UTC')
                                + make_interval(months => i))::date;
                    v_name := v_table || '_p' || to_char(v_month, 'YYYYMM');
                    CONTINUE WHEN to_regclass('public.' || v_name) IS NOT NULL;
                    v_low := ((extract(epoch FROM v_month::timestamp AT TIME ZONE 'UTC') * 1000)::bigint
                              - {ID_EPOCH_MS}) << {SEQUENCE_BITS};
                    v_high := ((extract(epoch FROM (v_month + interval '1 month')::timestamp
                                AT TIME ZONE 'UTC') * 1000)::bigint - {ID_EPOCH_MS}) << {SEQUENCE_BITS};
                    EXECUTE format(
                        'CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%s) TO (%s)',
                        v_name, v_table, greatest(v_low, 0), v_high);
                    EXECUTE format('REVOKE ALL ON public.%I FROM "{runtime}", "{support}"', v_name);
                    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', v_name);
                    EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', v_name);
                    v_created := v_created + 1;
                END LOOP;
            END LOOP;
            RETURN v_created;
        END $$
        """,
        "REVOKE ALL ON FUNCTION busbar_ensure_partitions(integer) FROM PUBLIC",
        f'GRANT EXECUTE ON FUNCTION busbar_ensure_partitions(integer) TO "{runtime}"',
        # Raw bytes never change; only the owner (retention) may remove or blank them.
        """
        CREATE FUNCTION busbar_refuse_unless_owner() RETURNS trigger LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF current_user = (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = TG_RELID) THEN
                RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
            END IF;
            RAISE EXCEPTION '% is immutable: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """,
        # A message's identity is written once: a column may go from empty to a value, never back
        # or to another value.
        f"""
        CREATE FUNCTION busbar_message_write_once() RETURNS trigger LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF (NEW.tenant_id, NEW.id, NEW.direction, NEW.connection_id, NEW.channel_id,
                NEW.interface_id, NEW.schema_version, NEW.event_code, NEW.correlation_id, NEW.mpan,
                NEW.business_key, NEW.created_at, NEW.source_raw_id)
               IS DISTINCT FROM
               (OLD.tenant_id, OLD.id, OLD.direction, OLD.connection_id, OLD.channel_id,
                OLD.interface_id, OLD.schema_version, OLD.event_code, OLD.correlation_id, OLD.mpan,
                OLD.business_key, OLD.created_at, OLD.source_raw_id) THEN
                RAISE EXCEPTION 'a message''s identity is immutable'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            {
            " ".join(
                f"IF OLD.{c} IS NOT NULL AND OLD.{c}::text <> '' AND NEW.{c} IS DISTINCT FROM OLD.{c} THEN "
                f"RAISE EXCEPTION 'message {c} is written once' USING ERRCODE = 'insufficient_privilege'; "
                "END IF;"
                for c in MESSAGE_WRITE_ONCE_COLUMNS
            )
        }
            RETURN NEW;
        END $$
        """,
    ]


def tables_sql() -> list[str]:
    runtime = settings.DB_RUNTIME_ROLE
    work = ", ".join(MESSAGE_WORK_COLUMNS + MESSAGE_WRITE_ONCE_COLUMNS)
    return [
        """
        CREATE TABLE messaging_raw (
            tenant_id uuid NOT NULL REFERENCES tenants_tenant (id),
            id bigint NOT NULL DEFAULT busbar_next_id(),
            kind varchar(12) NOT NULL CHECK (kind IN ('delivery', 'submission', 'payload', 'status')),
            direction varchar(8) NOT NULL CHECK (direction IN ('inbound', 'outbound')),
            connection_id bigint NOT NULL REFERENCES tenants_connection (id),
            channel_id bigint REFERENCES tenants_channel (id),
            created_at timestamptz NOT NULL DEFAULT now(),
            body_zstd bytea,
            body_sha256 bytea NOT NULL CHECK (octet_length(body_sha256) = 32),
            body_size integer NOT NULL CHECK (body_size >= 0),
            headers jsonb NOT NULL DEFAULT '{}',
            message_count integer NOT NULL DEFAULT 0,
            response_status smallint,
            response_body bytea,
            PRIMARY KEY (tenant_id, id)
        ) PARTITION BY RANGE (id)
        """,
        """
        CREATE TABLE messaging_message (
            tenant_id uuid NOT NULL REFERENCES tenants_tenant (id),
            id bigint NOT NULL DEFAULT busbar_next_id(),
            direction varchar(8) NOT NULL CHECK (direction IN ('inbound', 'outbound')),
            connection_id bigint NOT NULL REFERENCES tenants_connection (id),
            channel_id bigint REFERENCES tenants_channel (id),
            source_raw_id bigint,
            raw_id bigint,
            raw_offset integer,
            raw_length integer,
            sha256 bytea,
            interface_id varchar(8) NOT NULL DEFAULT '',
            schema_version varchar(10) NOT NULL DEFAULT '',
            event_code varchar(50) NOT NULL DEFAULT '',
            transaction_id varchar(65),
            sender_unique_reference varchar(200) NOT NULL DEFAULT '',
            correlation_id varchar(60) NOT NULL DEFAULT '',
            mpan varchar(13) NOT NULL DEFAULT '',
            business_key varchar(120) NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now(),
            state varchar(20) NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            lease_until timestamptz,
            next_attempt_at timestamptz,
            state_changed_at timestamptz NOT NULL DEFAULT now(),
            swept_at timestamptz,
            last_error text NOT NULL DEFAULT '',
            PRIMARY KEY (tenant_id, id),
            FOREIGN KEY (tenant_id, raw_id) REFERENCES messaging_raw (tenant_id, id),
            FOREIGN KEY (tenant_id, source_raw_id) REFERENCES messaging_raw (tenant_id, id)
        ) PARTITION BY RANGE (id)
        """,
        # Hot-path indexes only: every one slows receipt. Searches use the partial ones.
        # Work is taken oldest first by id (ids are time-ordered), which also makes "age of the
        # oldest waiting message" one index probe per state.
        "CREATE INDEX message_work ON messaging_message (tenant_id, direction, state, id)"
        " WHERE state NOT IN ('delivered', 'acknowledged', 'rejected', 'superseded')",
        "CREATE INDEX message_raw ON messaging_message (tenant_id, raw_id)",
        "CREATE INDEX message_transaction ON messaging_message (tenant_id, transaction_id)"
        " WHERE transaction_id IS NOT NULL",
        "CREATE INDEX message_mpan ON messaging_message (tenant_id, mpan, id) WHERE mpan <> ''",
        "CREATE INDEX message_reference ON messaging_message (tenant_id, sender_unique_reference)"
        " WHERE sender_unique_reference <> ''",
        "CREATE INDEX message_correlation ON messaging_message (tenant_id, correlation_id)"
        " WHERE correlation_id <> ''",
        "CREATE INDEX message_business_key ON messaging_message (tenant_id, business_key, id)"
        " WHERE business_key <> ''",
        """
        CREATE TABLE messaging_transition (
            tenant_id uuid NOT NULL REFERENCES tenants_tenant (id),
            id bigint NOT NULL DEFAULT busbar_next_id(),
            message_id bigint NOT NULL,
            at timestamptz NOT NULL DEFAULT now(),
            from_state varchar(20) NOT NULL,
            to_state varchar(20) NOT NULL,
            actor varchar(150) NOT NULL,
            reason varchar(500) NOT NULL DEFAULT '',
            detail jsonb,
            PRIMARY KEY (tenant_id, id),
            FOREIGN KEY (tenant_id, message_id) REFERENCES messaging_message (tenant_id, id)
        ) PARTITION BY RANGE (id)
        """,
        "CREATE INDEX transition_message ON messaging_transition (tenant_id, message_id)",
        """
        CREATE TABLE messaging_finding (
            tenant_id uuid NOT NULL REFERENCES tenants_tenant (id),
            id bigint NOT NULL DEFAULT busbar_next_id(),
            message_id bigint NOT NULL,
            run_at timestamptz NOT NULL DEFAULT now(),
            registry_version varchar(40) NOT NULL DEFAULT '',
            stage varchar(12) NOT NULL,
            severity varchar(8) NOT NULL CHECK (severity IN ('fatal', 'error', 'warning', 'info')),
            code varchar(40) NOT NULL,
            path varchar(300) NOT NULL DEFAULT '',
            text varchar(1000) NOT NULL DEFAULT '',
            rule varchar(80) NOT NULL DEFAULT '',
            PRIMARY KEY (tenant_id, id),
            FOREIGN KEY (tenant_id, message_id) REFERENCES messaging_message (tenant_id, id)
        ) PARTITION BY RANGE (id)
        """,
        "CREATE INDEX finding_message ON messaging_finding (tenant_id, message_id)",
        # The inbound dedupe: a unique key on the partitioned message table would have to include
        # the partition key, so the DIP transaction id is claimed here first, in the same
        # transaction. Narrow and not partitioned; retention prunes it beyond the replay horizon.
        """
        CREATE TABLE messaging_inbound_key (
            tenant_id uuid NOT NULL REFERENCES tenants_tenant (id),
            dedupe_key varchar(80) NOT NULL,
            message_id bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, dedupe_key)
        )
        """,
        # Counters kept as messages flow, so no dashboard ever counts the message table. Each row
        # is split in SHARDS by the writing backend, so concurrent writers rarely wait on one row.
        """
        CREATE TABLE messaging_flow_rollup (
            tenant_id uuid NOT NULL REFERENCES tenants_tenant (id),
            connection_id bigint NOT NULL REFERENCES tenants_connection (id),
            interface_id varchar(8) NOT NULL,
            direction varchar(8) NOT NULL,
            hour timestamptz NOT NULL,
            state varchar(20) NOT NULL,
            shard smallint NOT NULL,
            entered bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant_id, connection_id, interface_id, direction, hour, state, shard)
        )
        """,
        """
        CREATE TABLE messaging_state_count (
            tenant_id uuid NOT NULL REFERENCES tenants_tenant (id),
            connection_id bigint NOT NULL REFERENCES tenants_connection (id),
            interface_id varchar(8) NOT NULL,
            direction varchar(8) NOT NULL,
            state varchar(20) NOT NULL,
            shard smallint NOT NULL,
            count bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant_id, connection_id, interface_id, direction, state, shard)
        )
        """,
        "SELECT busbar_ensure_partitions(3)",
        # What the runtime role may do: insert raw, timeline and findings, never change them;
        # change a message's work columns (and write-once columns once), never delete one.
        *(
            f'REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM "{runtime}"'
            for table in ("messaging_raw", "messaging_transition", "messaging_finding")
        ),
        f'REVOKE UPDATE, DELETE, TRUNCATE ON messaging_message FROM "{runtime}"',
        f'GRANT UPDATE ({work}) ON messaging_message TO "{runtime}"',
        f'REVOKE UPDATE, DELETE, TRUNCATE ON messaging_inbound_key FROM "{runtime}"',
        *(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION busbar_refuse_unless_owner()"
            for table in ("messaging_raw", "messaging_transition", "messaging_finding")
        ),
        "CREATE TRIGGER messaging_message_write_once BEFORE UPDATE ON messaging_message"
        " FOR EACH ROW EXECUTE FUNCTION busbar_message_write_once()",
        "CREATE TRIGGER messaging_message_no_delete BEFORE DELETE ON messaging_message"
        " FOR EACH ROW EXECUTE FUNCTION busbar_refuse_unless_owner()",
    ]


BACKWARD = [
    "DROP TABLE IF EXISTS messaging_state_count",
    "DROP TABLE IF EXISTS messaging_flow_rollup",
    "DROP TABLE IF EXISTS messaging_inbound_key",
    "DROP TABLE IF EXISTS messaging_finding",
    "DROP TABLE IF EXISTS messaging_transition",
    "DROP TABLE IF EXISTS messaging_message",
    "DROP TABLE IF EXISTS messaging_raw",
    "DROP FUNCTION IF EXISTS busbar_message_write_once()",
    "DROP FUNCTION IF EXISTS busbar_refuse_unless_owner()",
    "DROP FUNCTION IF EXISTS busbar_ensure_partitions(integer)",
    "DROP FUNCTION IF EXISTS busbar_next_id()",
    "DROP SEQUENCE IF EXISTS busbar_id_seq",
]


def tenant_field() -> models.ForeignKey:
    return models.ForeignKey(
        default=core.tenancy.current_tenant_id,
        editable=False,
        on_delete=django.db.models.deletion.PROTECT,
        related_name="+",
        to="tenants.tenant",
    )


def next_id() -> models.BigIntegerField:
    return models.BigIntegerField(
        db_default=models.Func(function="busbar_next_id", output_field=models.BigIntegerField())
    )


STATE_OPERATIONS = [
    migrations.CreateModel(
        name="RawBlob",
        fields=[
            (
                "pk",
                models.CompositePrimaryKey(
                    "tenant_id", "id", blank=True, editable=False, primary_key=True, serialize=False
                ),
            ),
            ("tenant", tenant_field()),
            ("id", next_id()),
            (
                "kind",
                models.CharField(
                    choices=[
                        ("delivery", "A DIP webhook delivery, as received"),
                        ("submission", "A client system's submission, as received"),
                        ("payload", "A message's final bytes, as sent"),
                        ("status", "A DIP status-message push, as received"),
                    ],
                    max_length=12,
                ),
            ),
            (
                "direction",
                models.CharField(
                    choices=[
                        ("inbound", "Inbound (DIP to tenant)"),
                        ("outbound", "Outbound (tenant to DIP)"),
                    ],
                    max_length=8,
                ),
            ),
            (
                "connection",
                models.ForeignKey(
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="+",
                    to="tenants.connection",
                ),
            ),
            (
                "channel",
                models.ForeignKey(
                    null=True,
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="+",
                    to="tenants.channel",
                ),
            ),
            ("created_at", models.DateTimeField(db_default=models.functions.Now())),
            ("body_zstd", models.BinaryField(null=True)),
            ("body_sha256", models.BinaryField()),
            ("body_size", models.IntegerField()),
            ("headers", models.JSONField(default=dict)),
            ("message_count", models.IntegerField(default=0)),
            ("response_status", models.SmallIntegerField(null=True)),
            ("response_body", models.BinaryField(null=True)),
        ],
        options={"db_table": "messaging_raw"},
    ),
    migrations.CreateModel(
        name="Message",
        fields=[
            (
                "pk",
                models.CompositePrimaryKey(
                    "tenant_id", "id", blank=True, editable=False, primary_key=True, serialize=False
                ),
            ),
            ("tenant", tenant_field()),
            ("id", next_id()),
            (
                "direction",
                models.CharField(
                    choices=[
                        ("inbound", "Inbound (DIP to tenant)"),
                        ("outbound", "Outbound (tenant to DIP)"),
                    ],
                    max_length=8,
                ),
            ),
            (
                "connection",
                models.ForeignKey(
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="+",
                    to="tenants.connection",
                ),
            ),
            (
                "channel",
                models.ForeignKey(
                    null=True,
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="+",
                    to="tenants.channel",
                ),
            ),
            ("source_raw_id", models.BigIntegerField(null=True)),
            ("raw_id", models.BigIntegerField(null=True)),
            ("raw_offset", models.IntegerField(null=True)),
            ("raw_length", models.IntegerField(null=True)),
            ("sha256", models.BinaryField(null=True)),
            ("interface_id", models.CharField(default="", max_length=8)),
            ("schema_version", models.CharField(default="", max_length=10)),
            ("event_code", models.CharField(default="", max_length=50)),
            ("transaction_id", models.CharField(max_length=65, null=True)),
            ("sender_unique_reference", models.CharField(default="", max_length=200)),
            ("correlation_id", models.CharField(default="", max_length=60)),
            ("mpan", models.CharField(default="", max_length=13)),
            ("business_key", models.CharField(default="", max_length=120)),
            ("created_at", models.DateTimeField(db_default=models.functions.Now())),
            ("state", models.CharField(max_length=20)),
            ("attempts", models.IntegerField(default=0)),
            ("lease_until", models.DateTimeField(null=True)),
            ("next_attempt_at", models.DateTimeField(null=True)),
            ("state_changed_at", models.DateTimeField(db_default=models.functions.Now())),
            ("swept_at", models.DateTimeField(null=True)),
            ("last_error", models.TextField(default="")),
        ],
        options={"db_table": "messaging_message"},
    ),
    migrations.CreateModel(
        name="Transition",
        fields=[
            (
                "pk",
                models.CompositePrimaryKey(
                    "tenant_id", "id", blank=True, editable=False, primary_key=True, serialize=False
                ),
            ),
            ("tenant", tenant_field()),
            ("id", next_id()),
            ("message_id", models.BigIntegerField()),
            ("at", models.DateTimeField(db_default=models.functions.Now())),
            ("from_state", models.CharField(max_length=20)),
            ("to_state", models.CharField(max_length=20)),
            ("actor", models.CharField(max_length=150)),
            ("reason", models.CharField(default="", max_length=500)),
            ("detail", models.JSONField(null=True)),
        ],
        options={"db_table": "messaging_transition"},
    ),
    migrations.CreateModel(
        name="Finding",
        fields=[
            (
                "pk",
                models.CompositePrimaryKey(
                    "tenant_id", "id", blank=True, editable=False, primary_key=True, serialize=False
                ),
            ),
            ("tenant", tenant_field()),
            ("id", next_id()),
            ("message_id", models.BigIntegerField()),
            ("run_at", models.DateTimeField(db_default=models.functions.Now())),
            ("registry_version", models.CharField(default="", max_length=40)),
            ("stage", models.CharField(max_length=12)),
            ("severity", models.CharField(max_length=8)),
            ("code", models.CharField(max_length=40)),
            ("path", models.CharField(default="", max_length=300)),
            ("text", models.CharField(default="", max_length=1000)),
            ("rule", models.CharField(default="", max_length=80)),
        ],
        options={"db_table": "messaging_finding"},
    ),
    migrations.CreateModel(
        name="FlowRollup",
        fields=[
            (
                "pk",
                models.CompositePrimaryKey(
                    "tenant_id",
                    "connection_id",
                    "interface_id",
                    "direction",
                    "hour",
                    "state",
                    "shard",
                    blank=True,
                    editable=False,
                    primary_key=True,
                    serialize=False,
                ),
            ),
            ("tenant", tenant_field()),
            (
                "connection",
                models.ForeignKey(
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="+",
                    to="tenants.connection",
                ),
            ),
            ("interface_id", models.CharField(max_length=8)),
            ("direction", models.CharField(max_length=8)),
            ("hour", models.DateTimeField()),
            ("state", models.CharField(max_length=20)),
            ("shard", models.SmallIntegerField()),
            ("entered", models.BigIntegerField(default=0)),
        ],
        options={"db_table": "messaging_flow_rollup"},
    ),
    migrations.CreateModel(
        name="StateCount",
        fields=[
            (
                "pk",
                models.CompositePrimaryKey(
                    "tenant_id",
                    "connection_id",
                    "interface_id",
                    "direction",
                    "state",
                    "shard",
                    blank=True,
                    editable=False,
                    primary_key=True,
                    serialize=False,
                ),
            ),
            ("tenant", tenant_field()),
            (
                "connection",
                models.ForeignKey(
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="+",
                    to="tenants.connection",
                ),
            ),
            ("interface_id", models.CharField(max_length=8)),
            ("direction", models.CharField(max_length=8)),
            ("state", models.CharField(max_length=20)),
            ("shard", models.SmallIntegerField()),
            ("count", models.BigIntegerField(default=0)),
        ],
        options={"db_table": "messaging_state_count"},
    ),
    migrations.CreateModel(
        name="InboundKey",
        fields=[
            (
                "pk",
                models.CompositePrimaryKey(
                    "tenant_id",
                    "dedupe_key",
                    blank=True,
                    editable=False,
                    primary_key=True,
                    serialize=False,
                ),
            ),
            ("tenant", tenant_field()),
            ("dedupe_key", models.CharField(max_length=80)),
            ("message_id", models.BigIntegerField()),
            ("created_at", models.DateTimeField(db_default=models.functions.Now())),
        ],
        options={"db_table": "messaging_inbound_key"},
    ),
]


class Migration(migrations.Migration):
    dependencies = [("messaging", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(functions_sql(), BACKWARD[-5:]),
                migrations.RunSQL(tables_sql(), BACKWARD[:-5]),
            ],
            state_operations=STATE_OPERATIONS,
        ),
        EnableTenantRLS("messaging_raw", support_columns=SUPPORT_RAW_COLUMNS),
        EnableTenantRLS("messaging_message", support_columns=SUPPORT_MESSAGE_COLUMNS),
        EnableTenantRLS("messaging_transition"),
        EnableTenantRLS("messaging_finding"),
        EnableTenantRLS("messaging_inbound_key"),
        EnableTenantRLS(
            "messaging_flow_rollup",
            support_columns=[
                "tenant_id",
                "connection_id",
                "interface_id",
                "direction",
                "hour",
                "state",
                "shard",
                "entered",
            ],
        ),
        EnableTenantRLS(
            "messaging_state_count",
            support_columns=[
                "tenant_id",
                "connection_id",
                "interface_id",
                "direction",
                "state",
                "shard",
                "count",
            ],
        ),
    ]
