#!/usr/bin/env bash
# stop-slapd.sh DIR -- stops the slapd that start-slapd.sh DIR started (by its pid file only),
# and waits until it is gone (TERM, then KILL after 10 s). Does not delete DIR.
set -euo pipefail
DIR=${1:?usage: stop-slapd.sh DIR}
[[ "$DIR" = /* ]] || DIR="$(pwd)/$DIR"
PIDFILE="$DIR/run/slapd.pid"
[[ -s "$PIDFILE" ]] || PIDFILE="$DIR/run/slapd.launcher.pid"
[[ -s "$PIDFILE" ]] || { echo "stop-slapd: no pid file in $DIR/run; nothing to stop" >&2; exit 0; }
PID=$(cat "$PIDFILE")
[[ "$PID" =~ ^[0-9]+$ ]] || { echo "stop-slapd: bad pid file $PIDFILE" >&2; exit 1; }
alive() {  # running and not a zombie
  [[ -r "/proc/$1/stat" ]] || return 1
  local st; st=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$st" != Z && "$st" != X ]]
}
if ! alive "$PID"; then echo "stop-slapd: slapd (pid $PID) not running" >&2; rm -f "$DIR/run/slapd.pid"; exit 0; fi
# Make sure the pid really is a slapd serving this DIR before signalling it.
grep -qa -- "$DIR/slapd.d" "/proc/$PID/cmdline" 2>/dev/null \
  || { echo "stop-slapd: pid $PID is not the slapd of $DIR; refusing to signal it" >&2; exit 1; }
kill -TERM "$PID" 2>/dev/null || true
for _ in $(seq 400); do
  alive "$PID" || { rm -f "$DIR/run/slapd.pid"; echo "stop-slapd: slapd (pid $PID) stopped" >&2; exit 0; }
  sleep 0.025
done
echo "stop-slapd: slapd (pid $PID) did not stop after 10 s; sending KILL" >&2
kill -KILL "$PID" 2>/dev/null || true
for _ in $(seq 100); do alive "$PID" || exit 0; sleep 0.05; done
echo "stop-slapd: slapd (pid $PID) still alive after KILL" >&2
exit 1
