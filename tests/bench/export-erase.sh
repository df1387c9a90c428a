#!/usr/bin/env bash
# The export and erasure figures of docs/PERFORMANCE.md ("Account erasure") on the embedded store: fills
# one user with 1,000,000 events and another with 100,000 through the HTTP API, erases the second and
# exports the first, sampling the server's RSS. Run by hand from the repository root after
#   cargo build --release -p rookery-entrypoints --bin rookery -p rookery-tests --bin rookery-fill
set -euo pipefail
B=${BIN:-${CARGO_TARGET_DIR:-target}/release}; PORT=${PORT:-18383}; URL=http://127.0.0.1:$PORT
DIR=$(mktemp -d /var/tmp/rk-exp.XXXXXX)
$B/rookery serve --data-dir "$DIR/data" --addr 127.0.0.1:$PORT --rate-limit 0 > "$DIR/server.log" 2>&1 &
pid=$!; trap 'kill $pid 2>/dev/null || true' EXIT
until curl -fsS -o /dev/null $URL/healthz; do sleep 0.05; done
rss() { awk '/^VmRSS/ {printf "%.0f", $2/1024}' /proc/$pid/status; }
t0=$(date +%s%N); $B/rookery-fill fill --url $URL --events 1000000 --users 1 --items 20000 | tail -2
$B/rookery-fill fill --url $URL --events 200000 --users 2 --items 20000 | tail -2
echo "fill took $(( ($(date +%s%N) - t0) / 1000000 )) ms; RSS $(rss) MB"
tok() { curl -fsS -X POST $URL/v1/dev/tokens -H 'content-type: application/json' -d "{\"user_id\":\"$1\"}" | jq -r .token; }
T0=$(tok fill0); T1=$(tok fill1)
echo "fill1 last seq: $(curl -fsS "$URL/v1/sync?limit=1" -H "authorization: Bearer $T1" | jq -c '{c: (.changes|length), next: .next_cursor}' )"
t0=$(date +%s%N); code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE $URL/v1/me -H "authorization: Bearer $T1")
t1=$(date +%s%N); echo "erase fill1 (100,000 events): HTTP $code in $(( (t1 - t0) / 1000000 )) ms"
echo "after: GET /v1/items/notes/n1 -> $(curl -s -o /dev/null -w '%{http_code}' $URL/v1/items/notes/n1 -H "authorization: Bearer $T1")"
peak=0; ( while kill -0 $pid 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r && echo $peak > $DIR/peak; sleep 0.2; done ) & sampler=$!
echo "RSS before export $(rss) MB"
t0=$(date +%s%N); curl -fsS -o $DIR/export.ndjson $URL/v1/me/export -H "authorization: Bearer $T0"; t1=$(date +%s%N)
lines=$(wc -l < $DIR/export.ndjson); ms=$(( (t1 - t0) / 1000000 ))
kill $sampler 2>/dev/null || true
echo "export fill0: $lines lines, $(stat -c %s $DIR/export.ndjson) bytes in $ms ms = $(( (lines - 2) * 1000 / ms )) events/s; peak RSS during export $(cat $DIR/peak) MB; after $(rss) MB"
tail -c 200 $DIR/export.ndjson; echo
rm -rf "$DIR"
