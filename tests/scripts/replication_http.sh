#!/usr/bin/env bash
# One replication measurement over HTTP (release binaries: cargo build --release
# -p vigil -p vigil-tests --bins). Usage: replication_http.sh DELAY_MS
# MAX_LAG(none|0) RATE(max|N) CLIENTS. Starts a leader, a follower (through
# the relay when DELAY_MS > 0), runs vigil bench against the leader and
# prints its throughput and the leader's commit-to-durable lag figures.
# VIGIL_BENCH_SECS sets the run's length (default 10).
set -u
B=${VIGIL_BIN:-target/release}
D=$(mktemp -d); B=$(cd "$B" && pwd); cd "$D"
$B/vigil certs --out certs --cluster rb --node a --node b >/dev/null
LAG=""; [ "$2" != none ] && LAG="--max-lag-ms $2"
$B/vigil serve --data a --http 127.0.0.1:19080 --node a --cluster rb --certs certs --replication 127.0.0.1:19400 $LAG >a.out 2>a.err &
PA=$!
sleep 0.5
LEADER=127.0.0.1:19400
PR=""
if [ "$1" != 0 ]; then
  $B/relay 127.0.0.1:19400 $1 > r.out & PR=$!; sleep 0.3; LEADER=$(awk '{print $4}' r.out)
fi
$B/vigil serve --data b --http 127.0.0.1:19081 --node b --cluster rb --certs certs --role follower --leader $LEADER >b.out 2>b.err &
PB=$!
sleep 1
RATE=""; [ "$3" != max ] && RATE="--rate $3"
$B/vigil bench --url http://127.0.0.1:19080 --workload create --clients $4 --duration ${VIGIL_BENCH_SECS:-10} $RATE --json > bench.json 2>/dev/null
sleep 0.5
python3 - <<PY
import json
b=json.load(open('bench.json'))
import urllib.request
s=json.load(urllib.request.urlopen('http://127.0.0.1:19080/status'))
f=s['followers'][0] if s['followers'] else {}
print(f"delay={$1}ms max_lag=$2 rate=$3 clients=$4: {b['requests_per_second']:.0f} req/s p50 {b['p50_ms']:.2f} ms p99 {b['p99_ms']:.2f} ms errors {b['errors']}; lag commit->durable p50 {f.get('commit_to_durable_p50_ms',0):.1f} ms p99 {f.get('commit_to_durable_p99_ms',0):.1f} ms ({f.get('commit_to_durable_samples',0)} samples), follower durable {f.get('durable')} of {s['last_lsn']}")
PY
kill $PA $PB $PR 2>/dev/null; wait 2>/dev/null
cd /; rm -rf $D
