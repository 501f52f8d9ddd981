#!/usr/bin/env bash
# Sets up the core and runs the demo on the embedded local backend, then browses the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh core
.venv/bin/python examples/custom_trainer.py
.venv/bin/loggerhub runs
.venv/bin/loggerhub show latest
.venv/bin/loggerhub plot latest train/loss val/accuracy -o demo-metrics.png
