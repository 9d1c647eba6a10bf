#!/usr/bin/env bash
# The one command that runs every test: installs what it needs, then lint, types and pytest.
#   usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/bootstrap.sh dev

# Tests start private redis-server instances (so they can kill and restart them). Without the
# binary they fall back to fakeredis and skip the outage tests loudly; install it when we may.
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; then
    echo "test: installing redis-server (Debian package) for the Redis tests" >&2
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null ||
      echo "test: WARNING: could not install redis-server; Redis outage tests will be skipped" >&2
  fi
fi

.venv/bin/ruff check relayer api scripts tests
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
