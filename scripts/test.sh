#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then lint, type-check and run the
# whole suite.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/install-browser.sh
bash scripts/install-podman.sh
bash scripts/install-postgres.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # modelio/ service/ trainer/ ui/, strict less two checks ([tool.mypy])
.venv/bin/python -m pytest "$@"
