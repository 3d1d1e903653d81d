#!/usr/bin/env bash
# Regenerates .sqlx/, the offline data of the SQL macros (sqlx::query! and friends), or with
# `--check` fails when it is not current.
#
# The macros check each crate's SQL against a live database. This script makes a scratch database
# on 127.0.0.1:5432 (user postgres, trust), lays it out as production does (one schema per
# service, each with the kit's tables and the service's migrations; the in-process bus in `bus`),
# points each crate's variable (its sqlx.toml) at its own schema, and runs `cargo sqlx prepare`.
# The database is dropped afterwards; SQLX_PREPARE_KEEP=1 keeps it and prints the variables, for
# building against it while writing queries (with SQLX_OFFLINE=false).
#
# Needs psql and sqlx-cli 0.9 (`cargo install sqlx-cli --locked --version 0.9.0
# --no-default-features --features rustls,postgres`).
set -euo pipefail
cd "$(dirname "$0")/.."

check=()
case "${1:-}" in
  "") ;;
  --check) check=(--check) ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

host=127.0.0.1 port=5432
db="sqlx_prepare_$$"
psql_admin() { psql -h "$host" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
psql_admin -c 'select 1' >/dev/null \
  || { echo "error: cannot connect to PostgreSQL as postgres on $host:$port" >&2; exit 1; }
drop() { psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null; }
if [ -z "${SQLX_PREPARE_KEEP:-}" ]; then trap drop EXIT; fi
psql_admin -c "CREATE DATABASE \"$db\"" >/dev/null

# Applies the migration folders $2... in schema $1, in version order.
apply() {
  local schema=$1; shift
  psql -h "$host" -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 -q \
    -c "CREATE SCHEMA \"$schema\"" >/dev/null
  for dir in "$@"; do
    for f in $(ls "$dir"/*.sql | sort); do
      PGOPTIONS="-c search_path=$schema -c client_min_messages=warning" \
        psql -h "$host" -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 -q -f "$f" >/dev/null
    done
  done
}
url() { echo "postgres://postgres@$host:$port/$db?options=-c%20search_path%3D$1"; }

# crate variable (see the crate's sqlx.toml), schema, service migrations
services=(
  "SQLX_USER_DATABASE_URL users migrations/user"
  "SQLX_TICKET_DATABASE_URL tickets migrations/ticket"
  "SQLX_AUDIT_DATABASE_URL audit migrations/audit"
  "SQLX_NOTIFICATION_DATABASE_URL notifications migrations/notification"
  "SQLX_ADMIN_DATABASE_URL admin migrations/admin"
)
for s in "${services[@]}"; do
  read -r var schema dir <<<"$s"
  apply "$schema" migrations/kit "$dir"
  export "$var=$(url "$schema")"
done
apply bus migrations/bus
# The kit's SQL touches its own tables (any service schema has them), `user_access` (kept by the
# services without a user read model, e.g. notifications) and the bus.
export SQLX_KIT_DATABASE_URL
SQLX_KIT_DATABASE_URL=$(url "notifications%2Cbus")

if [ -n "${SQLX_PREPARE_KEEP:-}" ]; then
  echo "kept database $db; to build against it:"
  env | grep '^SQLX_[A-Z]*_DATABASE_URL=' | sort | sed "s/^\([^=]*\)=\(.*\)$/export \1='\2'/"
  echo "export SQLX_OFFLINE=false"
  exit 0
fi
# sqlx-cli wants a DATABASE_URL of its own (it only checks that it connects); every crate reads
# its own variable above.
DATABASE_URL=$(url public) cargo sqlx prepare --workspace "${check[@]}"
