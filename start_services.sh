#!/usr/bin/env bash
# Runs the whole StocKing platform on this machine (see README.md). Installs what it needs on
# first run, then hands over to scripts/supervise.py, which starts and supervises the services
# and stops them all on Ctrl-C or SIGTERM.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/bootstrap.sh runtime
exec .venv/bin/python scripts/supervise.py
