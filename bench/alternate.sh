#!/usr/bin/env bash
# bench/alternate.sh: builds of Starling and nats-server, alternated run
# after run on one closed-loop cell, for before/after figures on a shared
# machine where a cell's rate swings between runs.
#
#   bench/alternate.sh                                   # HEAD vs nats, fan-in and pairs, tcp
#   REVS="HEAD~1 HEAD" CELLS="fanin pairs100" TRS="tcp ws" ROUNDS=4 bench/alternate.sh
#
# Each round runs every (cell, transport) on every broker in turn (Starling
# at each of REVS, then nats-server), each on a fresh broker pinned to
# BROKER_CPU with starling-bench pinned to TOOL_CPU, -lead 500, QoS 0, 64 B,
# MQTT 3.1.1. Per run it prints the delivered rate, lost, and the broker's
# CPU time (utime + stime from /proc) per delivered message; then medians
# per broker, and the ratio of each build's median to nats-server's from
# the same rounds. Variables: REVS (HEAD), CELLS (fanin pairs100), TRS
# (tcp), ROUNDS (3), DURATION (3s), WARMUP (500ms), NATS (1: include
# nats-server), MOSQ (0; 1: include Mosquitto, and ratios against it too),
# BROKER_CPU (0), TOOL_CPU (1), OUT (a .jsonl of every run).
# Cells fanin1k and fanin64k (1 KiB and 64 KiB payloads) compare CPU per
# message at sizes where copying and allocating bodies dominate. QOS (0)
# sets the QoS of every cell. Cell latency10k is open loop (10,000 msg/s,
# 1 publisher, 1 subscriber, no -lead): the summary gives each run's p99.
# Everything it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REVS=${REVS:-HEAD}
CELLS=${CELLS:-fanin pairs100}
TRS=${TRS:-tcp}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-500ms}
NATS=${NATS:-1}
BROKER_CPU=${BROKER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
TCP_PORT=${TCP_PORT:-22883}
WS_PORT=${WS_PORT:-29083}
NATS_CLUSTER_PORT=${NATS_CLUSTER_PORT:-24223}

declare -A FLAGS=([fanin]="-scenario fanin" [pairs100]="-scenario pairs -pubs 100"
	[fanout100]="-scenario fanout -subs 100" [fanin1k]="-scenario fanin -size 1024"
	# As in compare.sh: 8 × 8 in flight × 64 KiB within every broker's queue limits.
	[fanin64k]="-scenario fanin -size 65536 -window 8"
	[fanout10x64k]="-scenario fanout -subs 10 -size 65536 -window 8"
	[latency10k]="-scenario latency -rate 10000")
QOS=${QOS:-0}
MOSQ=${MOSQ:-0}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

WORK=$(mktemp -d /tmp/starling-alternate.XXXXXX)
OUT=${OUT:-$WORK/runs.jsonl}
BP=
cleanup() {
	[[ -n $BP ]] && kill "$BP" 2>/dev/null || true
	rm -rf "$WORK/run" "$WORK/src"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- build each revision ----------------------------------------------------
BROKERS=()
for rev in $REVS; do
	name=starling@$(git rev-parse --short "$rev")
	rm -rf "$WORK/src" && mkdir -p "$WORK/src"
	git archive "$rev" | tar -x -C "$WORK/src"
	(cd "$WORK/src" && go build -o "$WORK/bin/$name" ./cmd/starling)
	BROKERS+=("$name")
done
go build -o "$WORK/bin/starling-bench" ./cmd/starling-bench
if [[ $NATS == 1 ]] && command -v nats-server >/dev/null; then BROKERS+=(nats); fi
if [[ $MOSQ == 1 ]] && [[ -x $MOSQUITTO ]]; then BROKERS+=(mosquitto); fi
: >"$OUT"

start() { # broker
	rm -rf "$WORK/run" && mkdir -p "$WORK/run"
	if [[ $1 == nats ]]; then
		cat >"$WORK/run/nats.conf" <<-CONF
			server_name: alternate
			listen: 127.0.0.1:$NATS_CLUSTER_PORT
			jetstream { store_dir: "$WORK/run/js" }
			mqtt { listen: 127.0.0.1:$TCP_PORT }
			websocket { listen: "127.0.0.1:$WS_PORT", no_tls: true }
		CONF
		taskset -c "$BROKER_CPU" nats-server -c "$WORK/run/nats.conf" >"$WORK/run/log" 2>&1 &
	elif [[ $1 == mosquitto ]]; then
		# As compare.sh starts it: no persistence, TCP_NODELAY, and a
		# WebSocket listener.
		cat >"$WORK/run/mosquitto.conf" <<-CONF
			per_listener_settings false
			allow_anonymous true
			persistence false
			log_dest stderr
			log_type error
			set_tcp_nodelay true
			listener $TCP_PORT 127.0.0.1
			listener $WS_PORT 127.0.0.1
			protocol websockets
		CONF
		taskset -c "$BROKER_CPU" "$MOSQUITTO" -c "$WORK/run/mosquitto.conf" >"$WORK/run/log" 2>&1 &
	else
		taskset -c "$BROKER_CPU" "$WORK/bin/$1" -tcp "127.0.0.1:$TCP_PORT" -http "127.0.0.1:$WS_PORT" \
			-data "$WORK/run/data" -log-level warn >"$WORK/run/log" 2>&1 &
	fi
	BP=$!
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$TCP_PORT") 2>/dev/null && { sleep 0.3; return 0; }
		sleep 0.1
	done
	log "$1 did not start"; cat "$WORK/run/log" >&2; exit 1
}
stop() { kill "$BP" 2>/dev/null || true; wait "$BP" 2>/dev/null || true; BP=; }
cpu() { awk '{print $14 + $15}' "/proc/$BP/stat"; } # clock ticks

tick=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
	for cell in $CELLS; do
		for tr in $TRS; do
			for b in "${BROKERS[@]}"; do
				start "$b"
				url=tcp://127.0.0.1:$TCP_PORT
				[[ $tr == ws ]] && url=ws://127.0.0.1:$WS_PORT/mqtt
				lead="-lead 500"
				[[ $cell == latency* ]] && lead=
				c0=$(cpu)
				# shellcheck disable=SC2086
				line=$(taskset -c "$TOOL_CPU" "$WORK/bin/starling-bench" -q -url "$url" ${FLAGS[$cell]} $lead \
					-qos "$QOS" -version 4 -duration "$DURATION" -warmup "$WARMUP" 2>/dev/null) || line=null
				c1=$(cpu)
				stop
				printf '{"round":%d,"broker":"%s","cell":"%s","transport":"%s","cpu_s":%s,"result":%s}\n' \
					"$round" "$b" "$cell" "$tr" "$(awk -v a="$c0" -v b="$c1" -v t="$tick" 'BEGIN { printf "%.3f", (b - a) / t }')" "$line" >>"$OUT"
			done
		done
	done
	log "round $round done"
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in runs:
    res = r["result"] or {}
    rate = res.get("delivered_per_s", 0)
    per = r["cpu_s"] * 1e6 / res["delivered"] if res.get("delivered") else float("nan")
    p99 = (res.get("latency") or {}).get("p99_us", 0)
    groups.setdefault((r["cell"], r["transport"]), {}).setdefault(r["broker"], []).append((rate, per, res.get("lost", -1), p99))
peers = [p for p in ("nats", "mosquitto") if any(p in by for by in groups.values())]
for (cell, tr), by in groups.items():
    print(f"\n{cell} {tr}")
    med = {b: (statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs)) for b, xs in by.items()}
    for b, xs in by.items():
        rate, per = med[b]
        runs_s = " ".join(f"{x[0]/1e3:.1f}k" for x in xs)
        lost = sum(x[2] for x in xs)
        line = f"  {b:22s} median {rate/1e3:7.1f}k msg/s ({runs_s}), {per:6.2f} us broker CPU/msg, lost {lost}"
        if cell.startswith("latency"):
            p99s = sorted(x[3] for x in xs)
            line += ", p99 us " + " ".join(f"{p:.0f}" for p in p99s) + f" ({sum(p <= 500 for p in p99s)} of {len(p99s)} <= 500)"
        for p in peers:
            if p in med and b not in peers and med[p][0]:
                line += f"; vs {p}: rate {rate/med[p][0]:.2f}x, CPU/msg {med[p][1]/per:.2f}x"
        print(line)
PY
log "runs in $OUT"
