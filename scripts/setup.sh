#!/usr/bin/env bash
# Creates .venv and installs loggerhub into it. `setup.sh core` installs the core only (the demo);
# `setup.sh dev` installs everything: the contract, the core, all four tracker plugins, the test
# tools, and torch + Ultralytics for the end-to-end tests. `setup.sh browser` installs Chromium and
# chromedriver for the browser tests when they are missing (apt, as root). `setup.sh services`
# installs PostgreSQL for the team-deployment tests when it is missing (apt, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dev}"
if [ "$profile" = browser ]; then
  # Chromium and its driver for the report and UI browser tests, from the system's packages, only
  # when missing, and only as root (CI machines and containers).
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup.sh browser: chromium or chromium-driver is missing; install them as root for the browser tests (they skip without)" >&2
      exit 0
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  exit 0
fi
if [ "$profile" = services ]; then
  # PostgreSQL's server binaries (/usr/lib/postgresql/<version>/bin) for the team-deployment tests,
  # which make a throwaway cluster with them; only when missing, and only as root.
  if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup.sh services: postgresql is missing; install it as root for the team-deployment tests (they skip without)" >&2
      exit 0
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  exit 0
fi
python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
case "$profile" in
  core) pip install -q -e ./hookspecs -e . ;;
  dev)
    pip install -q -r requirements-dev.txt
    # torch and torchvision from this pair only: the one whose torchvision imports on these machines.
    pip install -q -r requirements-e2e.txt
    ;;
  *) echo "usage: setup.sh [core|dev|browser|services]" >&2; exit 2 ;;
esac
