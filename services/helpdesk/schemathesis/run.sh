#!/usr/bin/env bash
# schemathesis (every phase, every check) against a fresh `helpdesk up`, as an ADMIN and then as
# an AGENT: the OpenAPI document must describe the API (no schema error, no undocumented status,
# every response matching its schema) and no request may get a 5xx.
#
#   services/helpdesk/schemathesis/run.sh [path/to/helpdesk]    (default: target/debug/helpdesk)
#
# ST_MAX_EXAMPLES (default 20) and ST_SEED (default fixed, for a repeatable CI) tune the run.
# schemathesis comes from PyPI into a virtualenv under the target folder, pinned.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
helpdesk=${1:-$target/debug/helpdesk}
version=4.32.5
[ -x "$helpdesk" ] || { echo "error: no helpdesk binary at $helpdesk (cargo build -p helpdesk)" >&2; exit 1; }

venv=$target/schemathesis-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Not created here: `helpdesk up` makes it (root runs PostgreSQL as another user, which a
# 0700 mktemp folder would lock out).
data=$(mktemp -u "${TMPDIR:-/tmp}/helpdesk-schemathesis-XXXXXX")
base=http://127.0.0.1:$port
# Rate limits off (a fuzzer signs in far more often than a person) and cheap password hashing.
env -u DATABASE_URL -u AMQP_URL -u SMTP_URL -u FRONTEND_BASE_URL -u CORS_ALLOWED_ORIGINS \
  USER_ARGON2_MEMORY_KIB=1024 USER_ARGON2_ITERATIONS=1 \
  USER_LOGIN_RATE_PER_IP=0 USER_LOGIN_RATE_PER_ACCOUNT=0 USER_FORGOT_RATE_PER_IP=0 \
  USER_FORGOT_RATE_PER_ACCOUNT=0 USER_RESET_RATE_PER_IP=0 \
  "$helpdesk" up --port "$port" --data-dir "$data" >"$data.log" 2>&1 &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$data" "$data.log"
}
trap stop EXIT
for _ in $(seq 90); do
  curl -sf "$base/ready" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$data.log" >&2; echo "error: helpdesk up stopped" >&2; exit 1; }
  sleep 1
done
curl -sf "$base/ready" >/dev/null || { cat "$data.log" >&2; echo "error: helpdesk up is not ready" >&2; exit 1; }

token() { # path, JSON body → the token of the answer
  curl -sf "$base$1" -H 'content-type: application/json' -d "$2" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
# One worker: several threads trip a CPython 3.11 bug in hypothesis's use of `ast`
# ("AST constructor recursion depth mismatch").
schemathesis() { # role, token
  echo "== schemathesis as $1"
  (cd "$here" && PYTHONPATH=$here "$venv/bin/schemathesis" --config-file schemathesis.toml run \
    "$base/api/openapi.json" --checks all --phases examples,coverage,fuzzing,stateful \
    -H "Authorization: Bearer $2" --max-examples "${ST_MAX_EXAMPLES:-20}" \
    --seed "${ST_SEED:-20261130}" --workers 1 --no-color)
}

admin_email=$(sed -n 1p "$data/admin-credentials")
admin_password=$(sed -n 2p "$data/admin-credentials")
passed=0 failed=0
admin=$(token /auth/login "{\"email\": \"$admin_email\", \"password\": \"$admin_password\"}")
if schemathesis ADMIN "$admin"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
# Signed up after the ADMIN's run, so that run cannot have demoted or deleted it.
agent=$(token /auth/signup '{"email": "schemathesis-agent@example.com", "password": "secret12"}')
if schemathesis AGENT "$agent"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
# One line for whoever reads the end of the log: one run per role.
echo "schemathesis: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
