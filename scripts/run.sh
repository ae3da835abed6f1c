#!/usr/bin/env bash
# One command from a fresh checkout to a working page: set up .venv, put the shipped
# default model (trained on real radiographs) in models/ when it has none, start the
# inference service and the web page, print both URLs, and stop both on Ctrl-C.
#
# Usage: bash scripts/run.sh [--data DIR | --synthetic] [--service-port N] [--ui-port N]
#                            [--host ADDR] [--retrain] [--skip-setup]
#
#   --data DIR          train a model on this dataset (class folders, Kaggle layout) with
#                       --recipe best instead of serving the shipped one [BONEFRAC_DATA_DIR]
#   --synthetic         train the quick demo CNN on synthetic drawings instead (for tests;
#                       it has never seen a radiograph)
#   --service-port N    port of the inference service (default 8000)  [BONEFRAC_SERVICE_PORT]
#   --ui-port N         port of the web page (default 8501)                [BONEFRAC_UI_PORT]
#   --host ADDR         address both listen on (default 127.0.0.1)       [BONEFRAC_RUN_HOST]
#   --retrain           with --data or --synthetic: train a new version even if one exists
#   --skip-setup        use the existing .venv as is (no pip)         [BONEFRAC_SKIP_SETUP=1]
#
# Other settings: BONEFRAC_MODELS_DIR (default models), BONEFRAC_MODEL_NAME (default
# bone-fracture), BONEFRAC_SYNTH_DIR (default data/synthetic), BONEFRAC_EPOCHS and
# BONEFRAC_SYNTH_PER_CLASS (--synthetic only; default: the trainer's),
# BONEFRAC_START_TIMEOUT (seconds to wait for readiness, default 180),
# BONEFRAC_RUN_LOG_DIR (where the trainer's output goes, default logs), and every
# BONEFRAC_* variable the service reads.
set -euo pipefail
# Paths the user gives (--data, BONEFRAC_MODELS_DIR, BONEFRAC_SYNTH_DIR) are relative to
# where they ran the command; the defaults are relative to the repository.
caller_dir="$PWD"
from_caller() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$caller_dir" "$1" ;; esac; }
cd "$(dirname "$0")/.."

die() { echo "run: $*" >&2; exit 2; }
# shellcheck source=scripts/logged.sh
source scripts/logged.sh

data_dir="${BONEFRAC_DATA_DIR:-}"
service_port="${BONEFRAC_SERVICE_PORT:-8000}"
ui_port="${BONEFRAC_UI_PORT:-8501}"
host="${BONEFRAC_RUN_HOST:-127.0.0.1}"
skip_setup="${BONEFRAC_SKIP_SETUP:-0}"
retrain=0
synthetic=0

while [ $# -gt 0 ]; do
  case "$1" in
    --data) [ $# -ge 2 ] || die "--data needs a folder"; data_dir="$2"; shift 2 ;;
    --data=*) data_dir="${1#*=}"; shift ;;
    --service-port) [ $# -ge 2 ] || die "--service-port needs a number"; service_port="$2"; shift 2 ;;
    --service-port=*) service_port="${1#*=}"; shift ;;
    --ui-port) [ $# -ge 2 ] || die "--ui-port needs a number"; ui_port="$2"; shift 2 ;;
    --ui-port=*) ui_port="${1#*=}"; shift ;;
    --host) [ $# -ge 2 ] || die "--host needs an address"; host="$2"; shift 2 ;;
    --host=*) host="${1#*=}"; shift ;;
    --retrain) retrain=1; shift ;;
    --synthetic) synthetic=1; shift ;;
    --skip-setup) skip_setup=1; shift ;;
    -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p;}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

for port in "$service_port" "$ui_port"; do
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
    || die "not a port number: $port"
done
[ "$service_port" != "$ui_port" ] || die "the service and the page need two different ports"
if [ -n "$data_dir" ] && [ "$synthetic" = 1 ]; then die "choose --data DIR or --synthetic, not both"; fi
if [ "$retrain" = 1 ] && [ -z "$data_dir" ] && [ "$synthetic" = 0 ]; then
  die "--retrain trains on --data DIR or --synthetic; say which"
fi
if [ -n "$data_dir" ]; then data_dir="$(from_caller "$data_dir")"; fi
if [ -n "$data_dir" ] && [ ! -d "$data_dir" ]; then die "no such dataset folder: $data_dir"; fi

models_dir=models
if [ -n "${BONEFRAC_MODELS_DIR:-}" ]; then models_dir="$(from_caller "$BONEFRAC_MODELS_DIR")"; fi
model_name="${BONEFRAC_MODEL_NAME:-bone-fracture}"
export BONEFRAC_MODELS_DIR="$models_dir" BONEFRAC_MODEL_NAME="$model_name"

# -- environment -----------------------------------------------------------------------
if [ "$skip_setup" = 1 ]; then
  echo "run: --skip-setup: using the existing environment"
else
  echo "run: setting up .venv (scripts/setup.sh train,service,ui,pretrained) ..."
  bash scripts/setup.sh train,service,ui,pretrained
fi
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py="$(command -v python3)"; fi

# -- a model to serve ------------------------------------------------------------------
# The trainer's output (TensorFlow's C++ log lines above all) goes to a log file.
log_dir=logs
if [ -n "${BONEFRAC_RUN_LOG_DIR:-}" ]; then log_dir="$(from_caller "$BONEFRAC_RUN_LOG_DIR")"; fi
has_version() {
  local dir="$models_dir/$model_name" entry
  [ -d "$dir" ] || return 1
  for entry in "$dir"/*/; do
    entry="$(basename "$entry")"
    if [[ "$entry" =~ ^[0-9]+$ ]] && [ "$entry" -gt 0 ]; then return 0; fi
  done
  return 1
}

if [ "$retrain" = 1 ] || ! has_version; then
  if [ -n "$data_dir" ]; then
    run_logged "$log_dir/train.log" "training $model_name on $data_dir with --recipe best
    (pretrained backbone; about 5 minutes for 1,000 images on 2 cores)" \
      "$py" -m trainer train --data "$data_dir" --models "$models_dir" --name "$model_name" \
      --recipe best
  elif [ "$synthetic" = 1 ]; then
    train_args=()
    if [ -n "${BONEFRAC_EPOCHS:-}" ]; then train_args=(--epochs "$BONEFRAC_EPOCHS"); fi
    synth_args=()
    if [ -n "${BONEFRAC_SYNTH_PER_CLASS:-}" ]; then
      synth_args=(--per-class "$BONEFRAC_SYNTH_PER_CLASS")
    fi
    train_data=data/synthetic
    if [ -n "${BONEFRAC_SYNTH_DIR:-}" ]; then train_data="$(from_caller "$BONEFRAC_SYNTH_DIR")"; fi
    if [ ! -d "$train_data" ]; then
      run_logged "$log_dir/synth.log" "writing synthetic X-rays to $train_data" \
        "$py" -m trainer synth --out "$train_data" ${synth_args[@]+"${synth_args[@]}"}
    fi
    run_logged "$log_dir/train.log" \
      "training $model_name on $train_data (a few minutes on 2 cores)" \
      "$py" -m trainer train --data "$train_data" --models "$models_dir" --name "$model_name" \
      ${train_args[@]+"${train_args[@]}"}
  else
    echo "run: no model in $models_dir/$model_name yet"
    run_logged "$log_dir/assemble.log" "assembling the shipped default model (trained on
    real radiographs; see default-model/MODEL_CARD.md; about a minute)" \
      "$py" -m trainer assemble --models "$models_dir" --name "$model_name"
  fi
elif [ -n "$data_dir" ] || [ "$synthetic" = 1 ]; then
  echo "run: $models_dir/$model_name already has a model; pass --retrain to train a new one"
fi

# -- the two processes -----------------------------------------------------------------
service_pid=""
ui_pid=""
stopping=0

stop_children() {
  # Children of a non-interactive shell ignore SIGINT, so they get TERM; both shut down
  # gracefully on it. The KILL is only for one that hangs.
  local pid
  for pid in $ui_pid $service_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in $ui_pid $service_pid; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for pid in $ui_pid $service_pid; do kill -KILL "$pid" 2>/dev/null || true; done
}

on_signal() {
  [ "$stopping" = 1 ] && return
  stopping=1
  echo
  echo "run: stopping the page and the service ..."
  stop_children
  echo "run: stopped"
  exit 0
}
trap on_signal INT TERM
trap 'stop_children' EXIT

# Browsers and the page reach the service through the loopback when it listens everywhere.
api_host="$host"
if [ "$host" = 0.0.0.0 ] || [ "$host" = "::" ]; then api_host=127.0.0.1; fi
service_url="http://$api_host:$service_port"
ui_url="http://$api_host:$ui_port"

"$py" -m service --host "$host" --port "$service_port" &
service_pid=$!

BONEFRAC_API_URL="$service_url" "$py" -m streamlit run ui/app.py \
  --server.headless true --server.address "$host" --server.port "$ui_port" \
  --browser.gatherUsageStats false --client.toolbarMode minimal &
ui_pid=$!

# wait_for URL PID LABEL: poll until URL answers 2xx, the process dies, or time runs out.
wait_for() {
  local url="$1" pid="$2" label="$3"
  "$py" - "$url" "$pid" "$label" <<'PY'
import os
import sys
import time
import urllib.request

url, pid, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + float(os.environ.get("BONEFRAC_START_TIMEOUT", "180"))
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"run: the {label} exited before it was ready (see its log above)")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if 200 <= response.status < 300:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(f"run: the {label} did not become ready at {url} in time")
PY
}

wait_for "$service_url/readyz" "$service_pid" "inference service"
wait_for "$ui_url/_stcore/health" "$ui_pid" "web page"

echo
echo "  Inference service: $service_url   (API docs: $service_url/docs)"
echo "  Web page:          $ui_url"
echo
echo "run: both running; press Ctrl-C to stop"

# Sleep in the background and wait on it, so a signal runs the trap at once; leave the
# loop when either child dies, then stop the other.
while kill -0 "$service_pid" 2>/dev/null && kill -0 "$ui_pid" 2>/dev/null; do
  sleep 1 &
  wait $! || true
done
# A Ctrl-C reaches the children too. When this shell was started with SIGINT ignored (by
# a background job of another script, say), it cannot trap it, and only sees a child
# gone: one that shut down cleanly (status 0) was stopped, not crashed.
status=0
for pid in $service_pid $ui_pid; do
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || status=$?
  fi
done
stopping=1
if [ "$status" = 0 ]; then
  echo "run: a process stopped; stopping the other" >&2
  stop_children
  exit 0
fi
echo "run: a process exited unexpectedly (status $status); stopping the other" >&2
stop_children
exit 1
