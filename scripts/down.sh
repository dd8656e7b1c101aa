#!/usr/bin/env bash
# `make down`: stop the stack `make up` runs (its pid file: up.sh first, then one process group per component).
# up.sh stops every group itself on SIGTERM; groups left behind by an up.sh that was killed hard are killed here.
set -euo pipefail
PIDFILE="${MLOPS_UP_PIDFILE:-$AIRFLOW_HOME/up.pid}"
if [ ! -f "$PIDFILE" ]; then
  echo "no stack running ($PIDFILE does not exist)"
  exit 0
fi
running() { # a live process (a zombie waiting for its parent to reap it is done)
  local st
  st=$(ps -o stat= -p "$1" 2> /dev/null) || return 1
  [[ $st != Z* ]]
}
mapfile -t ids < "$PIDFILE"
main="${ids[0]:-}"
if [ -n "$main" ] && kill -TERM "$main" 2> /dev/null; then
  echo "==> stopping make up (pid $main)"
  for _ in $(seq 1 90); do
    running "$main" || break
    sleep 0.5
  done
fi
for g in "${ids[@]:1}"; do kill -KILL -- -"$g" 2> /dev/null || true; done
rm -f "$PIDFILE"
echo "==> down"
