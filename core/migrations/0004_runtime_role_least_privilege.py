"""Take from the runtime role every privilege outside row-level security that it does not need.

- TEMPORARY on the database: a temporary object (a view named like a table, calling a pg_temp
  function) is how a SECURITY DEFINER function could be made to run the caller's code as the owner.
  A session that already holds a temporary schema keeps it until it ends, so restart web and workers
  after this migration.
- Sequences: identity columns draw their values without any privilege on the sequence, while SELECT
  (last_value) and USAGE (nextval) would tell one tenant how many rows all tenants have. The owner no
  longer grants sequences by default; a sequence that a function of the runtime role must draw from
  is granted USAGE by the migration that creates it.
- Writing Django's catalogues (schema history, content types, permissions): only migrations, run as
  the owner, write them. The runtime role keeps SELECT (readiness compares the schema history).
"""

from __future__ import annotations

from django.conf import settings
from django.db import migrations

CATALOGUES = ("django_migrations", "django_content_type", "auth_permission")


def forward_sql() -> list[str]:
    runtime = settings.DB_RUNTIME_ROLE
    return [
        f"""
        DO $$
        BEGIN
            EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, %I',
                           current_database(), '{runtime}');
        END $$
        """,
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM "{runtime}"',
        f"""
        DO $$
        DECLARE seq regclass;
        BEGIN
            FOR seq IN
                SELECT d.objid::regclass FROM pg_depend d
                JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                JOIN pg_namespace n ON n.oid = s.relnamespace AND n.nspname = 'public'
                WHERE d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
            LOOP
                EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', seq, '{runtime}');
            END LOOP;
        END $$
        """,
        *(
            f'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON "{table}" FROM "{runtime}"'
            for table in CATALOGUES
        ),
    ]


def backward_sql() -> list[str]:
    runtime = settings.DB_RUNTIME_ROLE
    return [
        *(f'GRANT INSERT, UPDATE, DELETE ON "{table}" TO "{runtime}"' for table in CATALOGUES),
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO "{runtime}"',
        f"""
        DO $$
        BEGIN
            EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), '{runtime}');
        END $$
        """,
    ]


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_totp_second_factor"),
        # The catalogues must exist before their write privileges are taken away.
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunSQL(forward_sql(), backward_sql())]
