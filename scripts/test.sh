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

# Bytecode caches on even where the environment turns them off, and written before the tests
# start: the four test workers and the ~100 processes the tests start (Gunicorn, the relayer,
# the fills worker) then read each of our modules compiled, instead of compiling it each
# (4.4 s instead of 8.4 s per worker just to collect).
unset PYTHONDONTWRITEBYTECODE
.venv/bin/python -m compileall -q -j 0 relayer api tests scripts >/dev/null

.venv/bin/ruff check relayer api scripts tests
.venv/bin/mypy
# Parallel test workers (pytest-xdist): most tests wait on servers, processes and clocks rather
# than the CPU, so two cores keep four workers busy. Each worker has its own redis-server and
# migrated database (tests/conftest.py); a module whose tests share costly servers is kept on
# one worker by its xdist_group mark. TEST_WORKERS=0 runs everything in this process.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-4}" --dist loadgroup "$@"
