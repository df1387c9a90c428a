#!/usr/bin/env bash
# The 10-million-event figures of docs/PERFORMANCE.md: fills `rookery serve --data-dir` through its HTTP API,
# then measures the restart to /healthz, memory at rest and under reads, bytes on disk per event and
# `rookery reindex`. Run by hand on a quiet machine, from the repository root, after
#   cargo build --release -p rookery-entrypoints --bin rookery -p rookery-tests --bin rookery-fill
# usage: tests/bench/fill.sh [EVENTS] [DATA_DIR]     (defaults: 10000000, a fresh directory under /var/tmp)
set -euo pipefail
EVENTS=${1:-10000000}
DIR=${2:-$(mktemp -d /var/tmp/rookery-fill.XXXXXX)}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
PORT=${PORT:-18282}
URL=http://127.0.0.1:$PORT
ROOKERY=$BIN/rookery
FILL=$BIN/rookery-fill
for b in "$ROOKERY" "$FILL"; do [[ -x $b ]] || { echo "no $b: build it first (see the header)" >&2; exit 2; }; done

pid=
stop() { if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi; }
trap stop EXIT
now_ms() { date +%s%3N; }
start() { # starts the server; sets pid, and started_ms to the milliseconds until /healthz answered
  local t0 t1
  t0=$(now_ms)
  "$ROOKERY" serve --data-dir "$DIR" --addr "127.0.0.1:$PORT" --rate-limit 0 >>"$DIR.server.log" 2>&1 &
  pid=$!
  until curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "the server exited; see $DIR.server.log" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(now_ms)
  started_ms=$((t1 - t0))
}
rss_mb() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status"; }

echo "data directory: $DIR; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
start
echo "first start: $started_ms ms to /healthz"
# 64 users with up to 20,000 items each: the first passes create the items, later ones replace them.
ITEMS=$(( EVENTS / 64 < 20000 ? EVENTS / 64 : 20000 ))
"$FILL" fill --url "$URL" --events "$EVENTS" --users 64 --items "$ITEMS"
echo "RSS after the fill: $(rss_mb) MB"
stop
echo "on disk: $(du -sb "$DIR" | cut -f1) bytes in $DIR ($(du -sh "$DIR" | cut -f1)); files:"
ls -l "$DIR"
echo "bytes per event: $(($(du -sb "$DIR" | cut -f1) / EVENTS))"

for round in 1 2 3; do
  start
  echo "restart $round: $started_ms ms to /healthz"
  sleep 5
  echo "  RSS at rest 5 s after the restart: $(rss_mb) MB"
  stop
done

start
sleep 2
"$FILL" get --url "$URL" --duration 30 --users 64 --items "$ITEMS" &
reader=$!
peak=0
while kill -0 "$reader" 2>/dev/null; do
  r=$(rss_mb); ((r > peak)) && peak=$r
  sleep 1
done
wait "$reader"
echo "RSS under GET load (peak of 1 s samples over 30 s): $peak MB; after: $(rss_mb) MB"
stop

echo "rookery reindex:"
/usr/bin/time -f "  %e s wall, %M KB peak RSS" "$ROOKERY" reindex --data-dir "$DIR" 2>&1 | tr '\r' '\n' | grep -v '^reindexing' || true
echo "done; the data directory stays at $DIR"
