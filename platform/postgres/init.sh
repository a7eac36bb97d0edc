#!/usr/bin/env bash
# Run roles.sql with the role passwords taken from the environment.
#
# In docker-compose.yml this is mounted into the postgres image's /docker-entrypoint-initdb.d/, so it
# runs once, when the data volume is first initialised, as the image's superuser over the local
# socket. Operators can run it by hand against any server with the usual libpq variables (PGHOST,
# PGPORT, PGUSER as a superuser, PGPASSWORD or ~/.pgpass):
#
#   BUSBAR_OWNER_PASSWORD=... BUSBAR_APP_PASSWORD=... BUSBAR_SUPPORT_PASSWORD=... \
#       PGHOST=db.internal PGUSER=postgres platform/postgres/init.sh
#
# Environment (all optional):
#   BUSBAR_OWNER_PASSWORD, BUSBAR_APP_PASSWORD, BUSBAR_SUPPORT_PASSWORD
#       set that role's password; unset or empty leaves an existing role's password unchanged
#   BUSBAR_OWNER_ROLE, BUSBAR_APP_ROLE, BUSBAR_SUPPORT_ROLE, BUSBAR_DB_NAME
#       role and database names (defaults busbar_owner, busbar_app, busbar_support, busbar)
#   BUSBAR_ROLES_SQL   path of roles.sql (default: beside this script)
#   BUSBAR_ADMIN_DB    database to connect to first (default postgres)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
roles_sql="${BUSBAR_ROLES_SQL:-$here/roles.sql}"

args=(-X -v ON_ERROR_STOP=1 --dbname "${BUSBAR_ADMIN_DB:-postgres}")
# Inside the postgres image PGUSER is not set but POSTGRES_USER names the superuser.
if [[ -z "${PGUSER:-}" && -n "${POSTGRES_USER:-}" ]]; then
    args+=(--username "$POSTGRES_USER")
fi

# Variables go to psql as \set lines on its standard input, ahead of roles.sql, so that passwords
# never appear in a command line (where ps would show them).
preamble=""
add_var() {  # add_var PSQL_VARIABLE ENV_VARIABLE: pass the value only when it is non-empty
    local value="${!2:-}"
    if [[ -n "$value" ]]; then
        value="${value//\\/\\\\}"
        value="${value//\'/\\\'}"
        preamble+="\\set $1 '$value'"$'\n'
    fi
}
add_var owner_role BUSBAR_OWNER_ROLE
add_var app_role BUSBAR_APP_ROLE
add_var support_role BUSBAR_SUPPORT_ROLE
add_var dbname BUSBAR_DB_NAME
add_var owner_password BUSBAR_OWNER_PASSWORD
add_var app_password BUSBAR_APP_PASSWORD
add_var support_password BUSBAR_SUPPORT_PASSWORD

{ printf '%s' "$preamble"; cat "$roles_sql"; } | psql "${args[@]}"
