#!/usr/bin/env bash
# Create .venv (once) and install the project with the given extras (default: dev).
# Usage: scripts/setup.sh [extras]     e.g. scripts/setup.sh train,service,ui,pretrained
#
# The first install puts up to 2.7 GB into .venv (TensorFlow is most of it; measured with
# the dev extra): 1-2 minutes on this project's machines, with pip's own progress lines. A stamp records what was installed for which pyproject.toml,
# so a later run with the same extras skips pip entirely.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
stamp=".venv/.bonefrac-installed-${extras//,/-}"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv already has bonefrac[$extras] for this pyproject.toml; nothing to install"
  exit 0
fi
echo "setup: installing bonefrac[$extras] into .venv (the first time takes a few minutes) ..."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# pip's progress, less the long list of what is already there
.venv/bin/python -m pip install --progress-bar off -e ".[${extras}]" \
  | { grep -v -E "^(Requirement already satisfied|  )" || true; }
echo "$want" > "$stamp"
echo "setup: done"
