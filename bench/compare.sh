#!/usr/bin/env bash
# bench/compare.sh: Starling side by side with Mosquitto and nats-server.
#
# Installs Debian's mosquitto and nats-server if missing, builds Starling and
# starling-bench, then starts each broker in turn on 127.0.0.1 (non-default
# ports) pinned to CPU 0 with the load tool pinned to CPU 1, runs the same
# cells against each, and writes a markdown table to bench/results/<date>.md
# (raw JSON lines next to it, .jsonl, and bar charts as <date>-<group>.png).
# Every cell runs twice; the two passes go through all brokers in turn, so
# drift on a shared machine hits them alike. Everything this script starts is stopped by PID on exit.
#
#   bench/compare.sh                     # about 10 minutes
#   DURATION=5s IDLE_CONNS=10000 bench/compare.sh
#   BROKERS="starling mosquitto" CELLS="fanin fanout100" bench/compare.sh
#   LEAD=0 bench/compare.sh              # closed loop bounded by -window alone
#
# Variables: DURATION (measured window per run, 3s), WARMUP (500ms), RUNS (2),
# IDLE_CONNS (10000), STORM_CONNS (2000), SLOW_DURATION (the slow-consumer
# flood, 10s), LEAD (500: how far a closed-loop publisher may run ahead of
# its slowest subscriber, starling-bench -lead, for the cells in LEAD_CELLS;
# -window, 64, then bounds only QoS 1 PUBACKs outstanding; 0: -window bounds
# both, as before), BROKERS, CELLS (see cells below),
# QOS (the QoS levels to run, such as 0; default each cell's own),
# DEFLATE_CELLS (idle: cells also run over ws with permessage-deflate
# negotiated, the "ws-deflate" rows, for Starling only), BROKER_CPU (0),
# TOOL_CPU (1), OUT (bench/results/<date>).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-500ms}
RUNS=${RUNS:-2}
IDLE_CONNS=${IDLE_CONNS:-10000}
STORM_CONNS=${STORM_CONNS:-2000}
SLOW_DURATION=${SLOW_DURATION:-10s}
LEAD=${LEAD:-500}
# The closed-loop cells run with the lead. fanin64k keeps -window 8 as its
# end-to-end bound: 8 publishers × 500 × 64 KiB would be 256 MiB owed to one
# subscriber, past every broker's queue limits, which measures the limits
# rather than the path.
LEAD_CELLS=${LEAD_CELLS:-fanin fanin1k fanout100 fanout1000 pairs100 slow}
BROKER_CPU=${BROKER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-bench/results/$DATE}
# starling-mem is Starling with store: memory, for the QoS 1 cells only: the
# in-memory figure next to the default durable one (fsync before PUBACK).
BROKERS=${BROKERS:-starling starling-mem mosquitto nats}
CELLS=${CELLS:-fanin fanin1k fanin64k fanout100 fanout1000 pairs100 latency10k latency50k slow idle connstorm}
DEFLATE_CELLS=${DEFLATE_CELLS:-idle}

# Ports: Starling 21883 (tcp) / 28083 (ws); Mosquitto 21884 / 28084; NATS 21885
# / 28085 (MQTT over its websocket listener); Starling in memory 21886 / 28086.
declare -A TCP=([starling]=21883 [mosquitto]=21884 [nats]=21885 [starling-mem]=21886)
declare -A WS=([starling]=28083 [mosquitto]=28084 [nats]=28085 [starling-mem]=28086)
# Brokers whose ws listener accepts permessage-deflate as run here.
declare -A DEFLATE=([starling]=1)

WORK=$(mktemp -d /tmp/starling-compare.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- install the peers ------------------------------------------------------
want=()
command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || want+=(mosquitto)
if [[ " $BROKERS " == *" nats "* ]] && ! command -v nats-server >/dev/null; then
	# A fresh machine's package lists may predate nats-server's.
	log "apt-get update"
	apt-get update >&2 || log "apt-get update failed: using the package lists as they are"
	# Not piped into grep -q: under pipefail, apt-cache killed by SIGPIPE
	# once grep has its match would read as "no package".
	policy=$(apt-cache policy nats-server 2>/dev/null || true)
	if [[ $policy == *"Candidate: "[0-9]* ]]; then
		want+=(nats-server)
	else
		log "this Debian has no nats-server package: comparing with Mosquitto only"
		BROKERS=${BROKERS/nats/}
	fi
fi
if ((${#want[@]})); then
	log "installing ${want[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${want[@]}" >&2
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
command -v taskset >/dev/null || { log "taskset (util-linux) is needed"; exit 1; }

# --- build ------------------------------------------------------------------
log "building starling and starling-bench"
# The tree as built (the table is written minutes later).
BUILT=$(git describe --always --dirty 2>/dev/null || echo '?')
go build -o "$WORK/bin/starling" ./cmd/starling
go build -o "$WORK/bin/starling-bench" ./cmd/starling-bench
go build -o "$WORK/bin/table" ./bench/table
mkdir -p "$(dirname "$OUT")"
: >"$OUT.jsonl"
: >"$OUT-flow.txt"
: >"$OUT-starling.log"

# --- brokers ----------------------------------------------------------------
BROKER_PID= BROKER_NAME= BROKER_DIR=
start_broker() { # name
	local name=$1 dir="$WORK/run-$1"
	BROKER_NAME=$name BROKER_DIR=$dir
	rm -rf "$dir" && mkdir -p "$dir"
	case $name in
	starling | starling-mem)
		# Compression is negotiated only with clients that offer it (the
		# ws-deflate rows): the other cells are unaffected.
		printf 'websocket:\n  compression: true\n' >"$dir/starling.yaml"
		[[ $name == starling-mem ]] && echo 'store: memory' >>"$dir/starling.yaml"
		taskset -c "$BROKER_CPU" "$WORK/bin/starling" -config "$dir/starling.yaml" -tcp "127.0.0.1:${TCP[$name]}" \
			-http "127.0.0.1:${WS[$name]}" -data "$dir/data" -log-level warn >"$dir/log" 2>&1 &
		;;
	mosquitto)
		cat >"$dir/mosquitto.conf" <<-CONF
			per_listener_settings false
			allow_anonymous true
			persistence false
			log_dest stderr
			log_type error
			# Mosquitto leaves Nagle on by default; its small replies then
			# wait on delayed ACKs (tens of ms per round trip in closed
			# loop). Starling and nats-server set TCP_NODELAY.
			set_tcp_nodelay true
			listener ${TCP[mosquitto]} 127.0.0.1
			listener ${WS[mosquitto]} 127.0.0.1
			protocol websockets
		CONF
		taskset -c "$BROKER_CPU" "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 &
		;;
	nats)
		cat >"$dir/nats.conf" <<-CONF
			server_name: bench
			listen: 127.0.0.1:24222
			jetstream { store_dir: "$dir/js" }
			mqtt { listen: 127.0.0.1:${TCP[nats]} }
			# MQTT over WebSocket (nats-server 2.9+): plain ws on loopback.
			websocket { listen: "127.0.0.1:${WS[nats]}", no_tls: true }
		CONF
		taskset -c "$BROKER_CPU" nats-server -c "$dir/nats.conf" >"$dir/log" 2>&1 &
		;;
	esac
	BROKER_PID=$!
	PIDS+=("$BROKER_PID")
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/${TCP[$name]}") 2>/dev/null; then
			sleep 0.3
			return 0
		fi
		kill -0 "$BROKER_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "$name did not start:"; cat "$dir/log" >&2
	return 1
}

stop_broker() {
	kill "$BROKER_PID" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$BROKER_PID" 2>/dev/null || true
	wait "$BROKER_PID" 2>/dev/null || true
	# Starling logs at warn: slow-consumer actions (with how long the client
	# had taken nothing) and anything that went wrong.
	if [[ $BROKER_NAME == starling* && -s $BROKER_DIR/log ]]; then
		sed "s/^/$BROKER_NAME: /" "$BROKER_DIR/log" >>"$OUT-starling.log"
	fi
	local keep=() pid
	for pid in "${PIDS[@]}"; do [[ $pid == "$BROKER_PID" ]] || keep+=("$pid"); done
	PIDS=("${keep[@]}")
}

# --- cells ------------------------------------------------------------------
# cell name -> starling-bench flags (the URL and run length are added).
declare -A FLAGS=(
	[fanin]="-scenario fanin"
	[fanin1k]="-scenario fanin -size 1024"
	# 8 publishers × 8 in flight × 64 KiB = 4 MiB owed to the one subscriber,
	# within every broker's default queue limits (Starling's 16 MiB).
	[fanin64k]="-scenario fanin -size 65536 -window 8"
	[slow]="-scenario slow -size 1024"
	[fanout100]="-scenario fanout -subs 100"
	[fanout1000]="-scenario fanout -subs 1000"
	[pairs100]="-scenario pairs -pubs 100"
	[latency10k]="-scenario latency -rate 10000"
	[latency50k]="-scenario latency -rate 50000"
	[idle]="-scenario idle -conns $IDLE_CONNS"
	[connstorm]="-scenario connstorm -conns $STORM_CONNS"
)
declare -A QOSES=([fanin]="0 1" [fanin1k]="0 1" [fanin64k]="0 1" [fanout100]="0 1" [fanout1000]="0 1"
	[pairs100]="0 1" [latency10k]="0 1" [latency50k]="0 1" [slow]="0 1" [idle]="0" [connstorm]="0")

bench() { # broker run cell transport qos
	local broker=$1 run=$2 cell=$3 tr=$4 qos=$5 url extra=
	case $tr in
	ws) url="ws://127.0.0.1:${WS[$broker]}/mqtt" ;;
	ws-deflate) url="ws://127.0.0.1:${WS[$broker]}/mqtt" extra=-ws-deflate ;;
	*) url="tcp://127.0.0.1:${TCP[$broker]}" ;;
	esac
	local line duration=$DURATION
	[[ $cell == slow ]] && duration=$SLOW_DURATION
	[[ $LEAD -gt 0 && " $LEAD_CELLS " == *" $cell "* ]] && extra+=" -lead $LEAD"
	# shellcheck disable=SC2086 # FLAGS holds several words
	line=$(timeout 180 taskset -c "$TOOL_CPU" "$WORK/bin/starling-bench" -q -url "$url" $extra ${FLAGS[$cell]} \
		-qos "$qos" -version 4 -duration "$duration" -warmup "$WARMUP" -broker-pid "$BROKER_PID" 2>"$WORK/err") || true
	if [[ -z $line ]]; then
		line=null
		log "  $broker $cell $tr q$qos: $(tail -n 3 "$WORK/err" | tr '\n' ' ')"
	fi
	printf '{"broker":"%s","run":%d,"cell":"%s","transport":"%s","qos":%d,"result":%s}\n' \
		"$broker" "$run" "$cell" "$tr" "$qos" "$line" >>"$OUT.jsonl"
	# Starling's flow-control counters after each cell (cumulative since the
	# broker started): holds, held time, slow-consumer actions and drops.
	if [[ $broker == starling* ]]; then
		{
			echo "# $broker run $run $cell $tr q$qos"
			curl -s --max-time 5 "http://127.0.0.1:${WS[$broker]}/metrics" |
				grep -E '^mqtt_(flow_|messages_dropped)' || echo "(metrics unavailable)"
		} >>"$OUT-flow.txt"
	fi
}

log "cells: $CELLS; brokers: $BROKERS; $RUNS runs of $DURATION after $WARMUP warm-up; lead $LEAD"
start=$(date +%s)
for run in $(seq "$RUNS"); do
	for broker in $BROKERS; do
		log "run $run: $broker"
		start_broker "$broker"
		fresh=1
		for cell in $CELLS; do
			[[ $broker == starling-mem && " ${QOSES[$cell]} " != *" 1 "* ]] && continue
			# Idle RSS needs a broker whose heap has not already grown
			# (and been freed) under the cells before it.
			if [[ $cell == idle && $fresh == 0 ]]; then
				stop_broker
				start_broker "$broker"
			fi
			fresh=0
			trs=(tcp)
			[[ -n ${WS[$broker]:-} ]] && trs+=(ws)
			[[ -n ${DEFLATE[$broker]:-} && " $DEFLATE_CELLS " == *" $cell "* ]] && trs+=(ws-deflate)
			for i in "${!trs[@]}"; do
				if [[ $cell == idle && $i -gt 0 ]]; then
					stop_broker # a fresh broker for each transport's figure
					start_broker "$broker"
				fi
				for qos in ${QOS:-${QOSES[$cell]}}; do
					# The in-memory Starling is there for its QoS 1 figures.
					[[ $broker == starling-mem && $qos == 0 ]] && continue
					bench "$broker" "$run" "$cell" "${trs[$i]}" "$qos"
				done
			done
		done
		stop_broker
	done
done
took=$(($(date +%s) - start))

# --- table ------------------------------------------------------------------
{
	echo "# Starling vs Mosquitto vs nats-server, $DATE"
	echo
	echo "Command: \`DURATION=$DURATION WARMUP=$WARMUP RUNS=$RUNS LEAD=$LEAD IDLE_CONNS=$IDLE_CONNS STORM_CONNS=$STORM_CONNS CELLS=\"$CELLS\" bench/compare.sh\` ($took s)."
	echo "Closed-loop cells with \`-lead $LEAD\`: $LEAD_CELLS (-window 64 bounds QoS 1 PUBACKs outstanding)."
	echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r);"
	echo "brokers pinned to CPU $BROKER_CPU, the load tool to CPU $TOOL_CPU (taskset); MQTT 3.1.1 everywhere (nats-server speaks no MQTT 5)."
	echo "Versions: starling $BUILT, $("$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/ running on.*//'), $(nats-server --version 2>/dev/null || echo 'nats-server absent')."
	echo
	"$WORK/bin/table" -png "$OUT" <"$OUT.jsonl"
	echo
	for f in "$OUT"-*.png; do
		echo "![$(basename "$f" .png)]($(basename "$f"))"
	done
} >"$OUT.md"
log "wrote $OUT.md, $OUT.jsonl, $OUT-flow.txt and $OUT-starling.log"
cat "$OUT.md"
