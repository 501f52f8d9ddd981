#!/usr/bin/env bash
# Sets up everything and runs the whole test suite (unit, conformance, fault and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/python -m pytest "$@"
