#!/usr/bin/env bash
# Broker RSS per idle connection, two starling binaries back to back: for
# each cell (connections x transport), a fresh broker of A then of B, RUNS
# times, so that both see the same machine. Starling runs as
# bench/compare.sh starts it (HTTP listener on, websocket.compression
# allowed, default configuration otherwise).
#
#   go build -o /tmp/stl-before ./cmd/starling   # at the base commit
#   go build -o /tmp/stl-after ./cmd/starling
#   bench/idle-ab.sh /tmp/stl-before /tmp/stl-after
#
# CONNS (default "10000 19000"), TRANSPORTS ("tcp ws"), RUNS (2),
# CONCURRENCY (64, starling-bench's default), PORT (19801; uses PORT and
# PORT+1). Needs `ulimit -n` above the largest CONNS for both processes.
set -euo pipefail
cd "$(dirname "$0")/.."

A=${1:?usage: bench/idle-ab.sh STARLING_A STARLING_B}
B=${2:?usage: bench/idle-ab.sh STARLING_A STARLING_B}
CONNS=${CONNS:-10000 19000}
TRANSPORTS=${TRANSPORTS:-tcp ws}
RUNS=${RUNS:-2}
CONCURRENCY=${CONCURRENCY:-64}
PORT=${PORT:-19801}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
go build -o "$WORK/starling-bench" ./cmd/starling-bench
printf 'websocket:\n  compression: true\n' >"$WORK/starling.yaml"

one() { # binary transport conns
	local bin=$1 tr=$2 n=$3 data url pid out
	data=$(mktemp -d -p "$WORK")
	"$bin" -config "$WORK/starling.yaml" -tcp "127.0.0.1:$PORT" -http "127.0.0.1:$((PORT + 1))" \
		-data "$data" -log-level warn &
	pid=$!
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
		sleep 0.1
	done
	sleep 1
	url=tcp://127.0.0.1:$PORT
	[[ $tr == ws ]] && url=ws://127.0.0.1:$((PORT + 1))/mqtt
	out=$("$WORK/starling-bench" -q -url "$url" -scenario idle -conns "$n" -concurrency "$CONCURRENCY" -broker-pid "$pid" || true)
	kill "$pid" && wait "$pid" 2>/dev/null || true
	rm -rf "$data"
	python3 -c 'import json,sys
r = json.loads(sys.argv[4] or "{}")
print("%-20s %-3s %6s  %6.0f B/conn  %6.0f conn/s  (%d opened, %d failed)" % (sys.argv[1], sys.argv[2], sys.argv[3],
      r.get("rss_per_conn_bytes", 0), r.get("conns_per_s", 0), r.get("conns_opened", 0), r.get("connect_failures", 0)))' \
		"$(basename "$bin")" "$tr" "$n" "$out"
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $CONNS; do
	for tr in $TRANSPORTS; do
		for _ in $(seq "$RUNS"); do
			one "$A" "$tr" "$n"
			one "$B" "$tr" "$n"
		done
	done
done
echo "# done $(date -u '+%H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
