#!/usr/bin/env bash
# Sets up the core and runs the demo on the embedded local backend, then browses the run and ends
# by writing an HTML report of the demo runs and printing its path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh core
.venv/bin/python examples/custom_trainer.py
.venv/bin/loggerhub runs
.venv/bin/loggerhub show latest
.venv/bin/loggerhub plot latest train/loss val/accuracy -o demo-metrics.png
# One self-contained HTML file of the demo's runs: open it in a browser, no server needed.
.venv/bin/loggerhub report demo -o demo-report.html
echo "report: file://$(pwd)/demo-report.html"
