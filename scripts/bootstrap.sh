#!/usr/bin/env bash
# Makes .venv hold exactly the locked dependencies. Sourced by start_services.sh and
# scripts/test.sh; safe to run again (a stamp file skips the install when the lock is unchanged).
#   usage: scripts/bootstrap.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=${1:-runtime}
lock=requirements.lock
[ "$profile" = dev ] && lock=requirements-dev.lock
python=${PYTHON:-python3}

say() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  # Debian splits venv/ensurepip out of python3; install what is missing when we may.
  command -v apt-get >/dev/null 2>&1 || return 1
  say "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "Python 3.11 or newer is required (found: $("$python" --version 2>&1 || echo none))"
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install "python${version}-venv" || apt_install python3-venv || {
      say "cannot create a virtual environment: install python3-venv (apt-get install python3-venv)"
      exit 1
    }
    "$python" -m venv .venv
  fi
fi

stamp=".venv/.installed-$(sha256sum "$lock" | cut -c1-16)"
dev_stamp=".venv/.installed-$(sha256sum requirements-dev.lock | cut -c1-16)"
# The dev lock pins the runtime lock's packages at the same versions (both compiled from
# pyproject.toml) plus the test tools, so a .venv installed for the tests also serves
# start_services.sh (which would otherwise swap the install back and forth).
if [ "$profile" = runtime ] && [ -f "$dev_stamp" ]; then
  stamp=$dev_stamp
fi
if [ ! -f "$stamp" ]; then
  say "installing $lock into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
