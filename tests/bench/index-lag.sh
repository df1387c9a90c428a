#!/usr/bin/env bash
# How far the search indexer is behind the log when a sustained fill stops (docs/PERFORMANCE.md).
# usage: tests/bench/index-lag.sh ROOKERY EVENTS PORT   (rookery-fill must be next to ROOKERY)
set -euo pipefail
R=$1; N=$2; PORT=$3
D=$(mktemp -d /var/tmp/lag.XXXXXX)
"$R" serve --data-dir "$D" --addr 127.0.0.1:$PORT --rate-limit 0 > "$D.log" 2>&1 &
pid=$!
until curl -fsS -o /dev/null http://127.0.0.1:$PORT/healthz 2>/dev/null; do sleep 0.05; done
"$(dirname "$R")/rookery-fill" fill --url http://127.0.0.1:$PORT --events "$N" --users 64 --items $((N/64 < 20000 ? N/64 : 20000)) 2>&1 | tail -1
python3 - "$D" <<'PY'
import sqlite3,sys
c=sqlite3.connect(f'file:{sys.argv[1]}/rookery.sqlite3?mode=ro',uri=True)
pos=dict(c.execute('select name, position from consumers').fetchall())
top=c.execute('select max(position) from events').fetchone()[0]
print("at the end of the fill: commit", top, "indexer", pos.get('indexer'), "lag", top-(pos.get('indexer') or 0))
PY
t0=$(date +%s%3N); kill -TERM $pid; wait $pid || true; echo "stop took $(( $(date +%s%3N) - t0 )) ms"
rm -rf "$D" "$D.log"
