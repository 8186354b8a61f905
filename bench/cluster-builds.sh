#!/usr/bin/env bash
# bench/cluster-builds.sh: cross-node QoS 1 cells to persistent and clean
# subscribers on a three-node cluster, for two builds of Starling measured
# in the same run (each on a fresh cluster, alternated RUNS times), so that
# a change's cost is a ratio against its parent on the same machine.
#
#   bench/cluster-builds.sh OLD_REV [NEW_REV]   # NEW_REV: the working tree
#
# Every broker process on CPU 0, the load tool on CPU 1 (taskset); the
# publisher on node 1, the subscribers round robin on nodes 2 and 3; MQTT 5,
# QoS 1, 64-byte payloads, 1 s warm-up, 3 s measured. Loopback only;
# everything started is stopped on exit; every run is bounded (timeout).
# Writes JSON lines (tag, cell, mode, starling-bench's result) to
# bench/results/cluster-builds-<date>.jsonl and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: bench/cluster-builds.sh OLD_REV [NEW_REV]}
NEW=${2:-}
RUNS=${RUNS:-2}
OUT=${OUT:-bench/results/cluster-builds-$(date -u +%Y-%m-%d).jsonl}
WORK=$(mktemp -d /tmp/starling-cluster-builds.XXXXXX)
PIDS=()
cleanup() {
	kill "${PIDS[@]}" 2>/dev/null || true
	sleep 1
	kill -9 "${PIDS[@]}" 2>/dev/null || true
	git worktree remove --force "$WORK/src-old" 2>/dev/null || true
	git worktree remove --force "$WORK/src-new" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

build() { # rev dir
	if [ -z "$1" ]; then
		go build -o "$2/starling" ./cmd/starling
	else
		git worktree add -q "$WORK/src-$(basename "$2")" "$1"
		(cd "$WORK/src-$(basename "$2")" && go build -o "$2/starling" ./cmd/starling)
	fi
}
mkdir -p "$WORK/old" "$WORK/new"
build "$OLD" "$WORK/old"
build "$NEW" "$WORK/new"
# One load tool for both: the current tree's.
go build -o "$WORK/starling-bench" ./cmd/starling-bench

M=(23884 23885 23886)
R=(27222 27223 27224)
SUBS="tcp://127.0.0.1:${M[1]},tcp://127.0.0.1:${M[2]}"
run() { # tag bindir
	local tag=$1 bin=$2 cn="builds$RANDOM" i j peers
	PIDS=()
	for i in 0 1 2; do
		peers=""
		for j in 0 1 2; do [ "$j" != "$i" ] && peers="$peers,127.0.0.1:${R[$j]}"; done
		mkdir -p "$WORK/$tag/n$i"
		taskset -c 0 "$bin/starling" -tcp "127.0.0.1:${M[$i]}" -http "" -data "$WORK/$tag/n$i" -log-level error \
			-cluster-name "$cn" -cluster-node "n$((i + 1))" -cluster-listen "127.0.0.1:${R[$i]}" \
			-cluster-peers "${peers#,}" >"$WORK/$tag/n$i.log" 2>&1 &
		PIDS+=($!)
	done
	# Ready: a strict cross-node QoS 1 fan-out loses nothing.
	for _ in $(seq 60); do
		timeout 20 "$WORK/starling-bench" -q -strict -url "tcp://127.0.0.1:${M[0]}" -sub-url "$SUBS" \
			-scenario fanout -subs 2 -qos 1 -duration 1s -warmup 0s >/dev/null 2>&1 && break
		sleep 1
	done
	cell() { # name mode flags...
		local name=$1 mode=$2 p="" line
		shift 2
		[ "$mode" = persistent ] && p=-persistent
		line=$(timeout 120 taskset -c 1 "$WORK/starling-bench" -q -url "tcp://127.0.0.1:${M[0]}" -sub-url "$SUBS" \
			-version 5 -qos 1 $p -topic "t$RANDOM" -duration 3s -warmup 1s "$@" 2>>"$WORK/err") || line='{}'
		echo "{\"tag\":\"$tag\",\"cell\":\"$name\",\"mode\":\"$mode\",\"r\":$line}" >>"$OUT"
	}
	cell "fanout -subs 100" clean -scenario fanout -subs 100
	cell "fanout -subs 100" persistent -scenario fanout -subs 100
	cell "fanout -subs 10" persistent -scenario fanout -subs 10
	cell "latency -rate 1000 -subs 2" persistent -scenario latency -rate 1000 -subs 2
	cell "latency -rate 1000 -subs 2" clean -scenario latency -rate 1000 -subs 2
	kill "${PIDS[@]}" 2>/dev/null || true
	sleep 2
}
for r in $(seq "$RUNS"); do
	run "old$r" "$WORK/old"
	run "new$r" "$WORK/new"
done
python3 - "$OUT" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); r = d["r"]; lat = r.get("latency", {})
    print(d["tag"], d["cell"], d["mode"], "delivered/s=%.0f" % r.get("delivered_per_s", 0),
          "lost", r.get("lost"), "p50_us", lat.get("p50_us"), "p99_us", lat.get("p99_us"))
PY
