#!/usr/bin/env bash
# Make one virtual environment per peer serving stack under benchmarks/peers/.venvs/<peer>
# from requirements-<peer>.txt (nothing of theirs goes into the product's environment).
#
#   bash benchmarks/peers/make_venvs.sh [peer ...]    # default: every peer
#
# PYTHON picks the interpreter (default: the base interpreter of the repository's .venv,
# so every peer runs the same CPython build as bonefrac). An existing environment is
# brought up to date, not rebuilt. Needs network access to PyPI only.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON="$("$repo/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
fi
peers=("$@")
if [[ ${#peers[@]} -eq 0 ]]; then
  peers=(bentoml litserve pytriton kserve rayserve)
fi
for peer in "${peers[@]}"; do
  requirements="$here/requirements-$peer.txt"
  [[ -f "$requirements" ]] || { echo "no $requirements" >&2; exit 2; }
  venv="$here/.venvs/$peer"
  echo "== $peer -> $venv"
  [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
done
