#!/usr/bin/env bash
# Sets up everything and runs the whole test suite (unit, conformance, fault, browser and end-to-end
# tests): the Python packages in .venv, and Chromium with its driver and PostgreSQL from the system's
# packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/setup.sh browser
bash scripts/setup.sh services
.venv/bin/python -m pytest "$@"
