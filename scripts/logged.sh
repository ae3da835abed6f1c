# Sourced by run.sh: run a long, chatty step with its output in a log file, not the terminal.
#
# run_logged LOG WHAT COMMAND...: says WHAT and where the details go, runs COMMAND with
# stdout and stderr appended to LOG, and says how long it took. On failure it shows the
# last lines of LOG and returns COMMAND's status. TensorFlow writes screens of C++ log
# lines (oneDNN, XNNPACK, cuda probing) while the trainer assembles or trains a model;
# a newcomer needs to see what is happening, not those.
run_logged() {
  local log="$1" what="$2" started status=0
  shift 2
  mkdir -p "$(dirname "$log")"
  echo "run: $what ..."
  echo "run:   (details in $log)"
  started=$SECONDS
  {
    echo "== $(date -u '+%Y-%m-%dT%H:%M:%SZ') $what"
    echo "== $*"
  } >>"$log"
  "$@" >>"$log" 2>&1 || status=$?
  if [ "$status" != 0 ]; then
    echo "run: failed after $((SECONDS - started)) s (status $status); the end of $log:" >&2
    tail -n 25 "$log" | sed 's/^/  | /' >&2
    return "$status"
  fi
  echo "run:   done in $((SECONDS - started)) s"
}
