#!/usr/bin/env bash
# Creates .venv and installs loggerhub into it. `setup.sh core` installs the core only (the demo);
# `setup.sh dev` installs everything: the contract, the core, all four tracker plugins, the test
# tools, and torch + Ultralytics for the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dev}"
python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
case "$profile" in
  core) pip install -q -e ./hookspecs -e . ;;
  dev)
    pip install -q -r requirements-dev.txt
    # torch and torchvision from this pair only: the one whose torchvision imports on these machines.
    pip install -q -r requirements-e2e.txt
    ;;
  *) echo "usage: setup.sh [core|dev]" >&2; exit 2 ;;
esac
