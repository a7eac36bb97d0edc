-- Busbar: PostgreSQL roles and database, for operators.
--
-- Semantically identical to bootstrap_roles() and bootstrap_database() in core/devenv.py, which is
-- the reference and does the same for local runs and tests. Change both together. The one
-- difference: devenv.py gives a role a password when it creates it, and an existing role only when
-- it first records that server's passwords (per server, in ~/.config/busbar, shared by every
-- checkout on the machine), while this file sets a password only when its psql variable is given,
-- so an existing role keeps its password otherwise. Everything in it can be run again safely.
--
-- Run it as a superuser, connected to any database of the cluster (usually "postgres"):
--
--   psql -h DBHOST -U postgres -d postgres -v ON_ERROR_STOP=1 \
--        -v owner_password="$BUSBAR_OWNER_PASSWORD" \
--        -v app_password="$BUSBAR_APP_PASSWORD" \
--        -v support_password="$BUSBAR_SUPPORT_PASSWORD" \
--        -f platform/postgres/roles.sql
--
-- (platform/postgres/init.sh does the same with the values taken from environment variables.)
--
-- psql variables, all optional:
--   owner_role        default busbar_owner    runs migrations and owns every table
--   app_role          default busbar_app      web and workers; subject to row-level security
--   support_role      default busbar_support  provider support's cross-tenant metadata reads
--   dbname            default busbar
--   owner_password, app_password, support_password
--                     set (or change) that role's password; omitted: the password is left as it is
--                     (a new role then has none until one is set)
--
-- What it does (DESIGN.md section 3):
--   * busbar_owner: LOGIN NOSUPERUSER NOBYPASSRLS. Owns the database and, through migrations,
--     every table; tables FORCE row-level security, so even the owner is bound by the policies.
--   * busbar_app: LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE. Owns nothing. Gets
--     CONNECT (never TEMPORARY) and SELECT/INSERT/UPDATE/DELETE on every table that the owner
--     creates in schema public, by default privileges, and nothing on sequences; the migrations
--     take away the rest it must not do (core 0004). Web and workers must connect as this role:
--     row-level security only holds for a role that is neither superuser, BYPASSRLS nor owner.
--   * busbar_support: LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE. CONNECT and USAGE
--     only here; its per-column grants and policies come from the migrations.
--   * the database: owned by busbar_owner, UTF8 from template0, no privileges for PUBLIC, and no
--     CREATE on schema public for PUBLIC.
--
-- Passwords given here reach the server inside ALTER ROLE statements; the script turns statement
-- logging (and pg_stat_statements' tracking of such statements) off for its own session, so they
-- land neither in the server log nor in pg_stat_statements.

\set ON_ERROR_STOP on
\set QUIET on

\if :{?owner_role}
\else
\set owner_role busbar_owner
\endif
\if :{?app_role}
\else
\set app_role busbar_app
\endif
\if :{?support_role}
\else
\set support_role busbar_support
\endif
\if :{?dbname}
\else
\set dbname busbar
\endif

DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'roles.sql must be run by a superuser (it creates roles and a database)';
    END IF;
END
$$;

SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET pg_stat_statements.track_utility = off;

-- --- roles ------------------------------------------------------------------------------------
-- CREATE when missing, then ALTER to the exact attributes: the result equals devenv.py's
-- "CREATE ROLE ... <attributes>" for a new role and "ALTER ROLE ... <attributes>" for an existing one.

SELECT format('CREATE ROLE %I', :'owner_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner_role') \gexec
ALTER ROLE :"owner_role" LOGIN NOSUPERUSER NOBYPASSRLS;
\if :{?owner_password}
ALTER ROLE :"owner_role" PASSWORD :'owner_password';
\else
\echo roles.sql: no owner_password given: :owner_role keeps its password (a role created just now has none)
\endif

SELECT format('CREATE ROLE %I', :'app_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role') \gexec
ALTER ROLE :"app_role" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
\if :{?app_password}
ALTER ROLE :"app_role" PASSWORD :'app_password';
\else
\echo roles.sql: no app_password given: :app_role keeps its password (a role created just now has none)
\endif

SELECT format('CREATE ROLE %I', :'support_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'support_role') \gexec
ALTER ROLE :"support_role" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
\if :{?support_password}
ALTER ROLE :"support_role" PASSWORD :'support_password';
\else
\echo roles.sql: no support_password given: :support_role keeps its password (a role created just now has none)
\endif

-- --- database ---------------------------------------------------------------------------------
-- Created only when missing; an existing database keeps its owner (as in devenv.py).

SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0',
              :'dbname', :'owner_role', 'UTF8')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname') \gexec

\connect :"dbname"

-- As the superuser: another session's query text (with its literal values, under client-side
-- binding) is readable by any session of the same role, so one tenant's request could read
-- another's. Monitoring keeps it through pg_monitor.
REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) FROM PUBLIC;
GRANT SELECT ON pg_catalog.pg_stat_activity TO pg_monitor;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO pg_monitor;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) TO pg_monitor;

-- Everything below runs as the owner, so the grants are the owner's own and the default privileges
-- apply to the objects the owner's migrations will create.
SET ROLE :"owner_role";

REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
-- No TEMPORARY: a temporary object could hijack a SECURITY DEFINER function and run as the owner.
REVOKE TEMPORARY ON DATABASE :"dbname" FROM :"app_role";
GRANT CONNECT ON DATABASE :"dbname" TO :"app_role";
GRANT CONNECT ON DATABASE :"dbname" TO :"support_role";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app_role", :"support_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_role";
-- Identity columns need no privilege on their sequence; reading one would tell a tenant how many
-- rows every tenant has. A sequence the runtime role must draw from is granted by its migration.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA public
    REVOKE ALL ON SEQUENCES FROM :"app_role";

RESET ROLE;

\echo roles.sql: roles :owner_role, :app_role, :support_role and database :dbname are in place
