#!/usr/bin/env bash
# Create .venv (once) and install the project with the given extras (default: dev).
# Usage: scripts/setup.sh [extras]     e.g. scripts/setup.sh train,service,ui
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
