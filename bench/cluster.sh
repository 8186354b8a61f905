#!/usr/bin/env bash
# bench/cluster.sh: cross-node fan-out and latency of a three-node Starling
# cluster, next to a single node measured in the same run.
#
# Builds starling and starling-bench from the working tree, then:
#   1. starts one node (no cluster) and measures the cells below: the
#      baseline, "single";
#   2. starts three clustered nodes, waits until the cluster is ready (a
#      retained message published on node 1 is seen on nodes 2 and 3, then a
#      short strict fan-out from node 1 to nodes 2 and 3 loses nothing), and
#      measures the same cells twice over: with the publisher and every
#      subscriber on node 1 ("local": what clustering costs without
#      crossing) and with the publisher on node 1 and the subscribers spread
#      round robin over nodes 2 and 3 ("cross": every message crosses the
#      NATS routes). The fan-in cell (8 publishers, 1 subscriber) puts its
#      publishers on node 1 and its subscriber on node 3 when cross-node.
# Every cell runs RUNS times (2); all runs are reported. Writes a markdown
# table to bench/results/cluster-<date>.md and the JSON lines (one per run,
# starling-bench's result plus the broker processes' CPU time) next to it
# (.jsonl). Loopback only; everything this script starts is stopped by PID on
# exit; every run is bounded (timeout).
#
# Pinning (taskset, when present): every broker process, the single node and
# all three cluster nodes, on BROKER_CPU (0), the load tool on TOOL_CPU (1).
# The broker side gets the same one CPU in every setup, so a cluster/single
# ratio is what clustering costs in CPU on one machine, not a gain from more
# cores. All nodes on one machine: "cross-node" means through the loopback
# NATS routes, bounded by CPU sharing, not by a network.
#
#   bench/cluster.sh                          # about 5 minutes
#   DURATION=3s RUNS=3 bench/cluster.sh
#   CELLS="fanout100" bench/cluster.sh
#   CELLS="fanin" RUNS=2 bench/cluster.sh     # cross-node fan-in only
#   CELLS="fanin faninp"                      # and to a persistent session
#
# Variables: DURATION (measured window per run, 5s), WARMUP (1s), RUNS (2),
# RATE (latency cells' offered msg/s, 5000), CELLS (fanout100 latency fanin;
# faninp, fan-in to a persistent session, on request),
# BROKER_CPU (0), TOOL_CPU (1), OUT (bench/results/cluster-<date>),
# STARLING (a starling binary to measure instead of building the working
# tree's, e.g. an older commit's for a before/after pair), LABEL (what the
# table calls that binary), INTERLEAVE (1: keep the single node up, idle,
# beside the cluster and measure it in each run right before the cluster's
# setups, instead of all its runs first; its CPU figure then includes the
# idle cluster's, and the cluster's the idle single node's).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
RUNS=${RUNS:-2}
RATE=${RATE:-5000}
CELLS=${CELLS:-fanout100 latency fanin}
BROKER_CPU=${BROKER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
INTERLEAVE=${INTERLEAVE:-0}
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-bench/results/cluster-$DATE}

# Ports (loopback): single node 22883; cluster nodes MQTT 22884-22886,
# cluster routes 26222-26224.
SINGLE=22883
MQTT=(22884 22885 22886)
ROUTE=(26222 26223 26224)

WORK=$(mktemp -d /tmp/starling-cluster-bench.XXXXXX)
PIDS=()
cleanup() {
	local pid
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

PIN_BROKER=() PIN_TOOL=()
if command -v taskset >/dev/null && (($(nproc) > 1)); then
	PIN_BROKER=(taskset -c "$BROKER_CPU")
	PIN_TOOL=(taskset -c "$TOOL_CPU")
	PINNING="every broker process on CPU $BROKER_CPU, the load tool on CPU $TOOL_CPU (taskset)"
else
	PINNING="no pinning (taskset absent or one CPU)"
	log "$PINNING"
fi
command -v jq >/dev/null || { log "jq is needed for the table (apt-get install jq)"; exit 1; }

# --- build ------------------------------------------------------------------
log "building starling and starling-bench"
go build -o "$WORK/bin/starling-bench" ./cmd/starling-bench
if [[ -n ${STARLING:-} ]]; then
	cp "$STARLING" "$WORK/bin/starling"
	VERSION=${LABEL:-$STARLING}
	CHANGED=
else
	go build -o "$WORK/bin/starling" ./cmd/starling
	# What was built: the commit, "-dirty" if the tree had changes (listed in
	# the table's header; bench/ and docs/ excepted).
	VERSION=$(git describe --always --dirty 2>/dev/null || echo '?')
	CHANGED=$(git status --porcelain 2>/dev/null | grep -v -e ' bench/' -e ' docs/' | awk '{print $2}' | tr '\n' ' ' || true)
fi
mkdir -p "$(dirname "$OUT")"
: >"$OUT.jsonl"

# --- brokers ----------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

NODE_PIDS=()
start_node() { # name mqtt-port [cluster flags...]
	local name=$1 port=$2 dir="$WORK/$1"
	shift 2
	if port_open "$port"; then
		log "port $port is already in use"
		return 1
	fi
	mkdir -p "$dir"
	"${PIN_BROKER[@]}" "$WORK/bin/starling" -tcp "127.0.0.1:$port" -http "" -data "$dir/data" \
		-log-level warn "$@" >"$dir/log" 2>&1 &
	PIDS+=($!)
	NODE_PIDS+=($!)
}

wait_port() { # port pid name
	for _ in $(seq 100); do
		port_open "$1" && return 0
		kill -0 "$2" 2>/dev/null || break
		sleep 0.1
	done
	log "$3 did not start:"
	cat "$WORK/$3/log" >&2
	return 1
}

stop_nodes() {
	local pid keep=()
	for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${NODE_PIDS[@]}"; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do [[ " ${NODE_PIDS[*]} " == *" $pid "* ]] || keep+=("$pid"); done
	PIDS=("${keep[@]}")
	NODE_PIDS=()
}

# cpu_s: CPU seconds (user + system) used so far by the running nodes.
TICK=$(getconf CLK_TCK)
cpu_s() {
	local pid sum=0 f
	for pid in "${NODE_PIDS[@]}"; do
		f=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
		sum=$((sum + ${f% *} + ${f#* }))
	done
	echo "$sum"
}

# wait_ready: a retained message published on node 1 is read on nodes 2 and
# 3 (when mosquitto clients are installed), then a short strict fan-out from
# node 1 to subscribers on nodes 2 and 3 loses nothing. At most 60 s.
READY_S=
wait_ready() {
	local start=$SECONDS tag got ok
	while ((SECONDS - start < 60)); do
		ok=1
		if command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null; then
			tag="ready-$RANDOM$RANDOM"
			timeout 10 mosquitto_pub -h 127.0.0.1 -p "${MQTT[0]}" -q 1 -r -t bench/cluster/ready -m "$tag" 2>/dev/null || ok=0
			for port in "${MQTT[1]}" "${MQTT[2]}"; do
				got=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$port" -t bench/cluster/ready -C 1 -W 2 2>/dev/null) || true
				[[ $got == "$tag" ]] || ok=0
			done
		fi
		if ((ok)) && timeout 30 "$WORK/bin/starling-bench" -q -strict -url "tcp://127.0.0.1:${MQTT[0]}" \
			-sub-url "tcp://127.0.0.1:${MQTT[1]},tcp://127.0.0.1:${MQTT[2]}" -scenario fanout -subs 2 -qos 1 \
			-duration 500ms -drain 2s >/dev/null 2>"$WORK/probe.err"; then
			READY_S=$((SECONDS - start))
			command -v mosquitto_pub >/dev/null &&
				timeout 10 mosquitto_pub -h 127.0.0.1 -p "${MQTT[0]}" -q 1 -r -n -t bench/cluster/ready 2>/dev/null
			return 0
		fi
		sleep 1
	done
	log "cluster not ready after 60 s; last probe: $(tail -n 2 "$WORK/probe.err" 2>/dev/null | tr '\n' ' ')"
	return 1
}

# --- cells ------------------------------------------------------------------
# cell name -> starling-bench flags (URLs and run length are added). The
# latency cells use 2 subscribers so that the cross-node setup has one on
# each of nodes 2 and 3.
declare -A FLAGS=(
	[fanout100]="-scenario fanout -subs 100"
	[latency]="-scenario latency -subs 2 -rate $RATE"
	[fanin]="-scenario fanin -pubs 8 -subs 1"
	[faninp]="-scenario fanin -pubs 8 -subs 1 -persistent"
)
QOSES="0 1"

bench() { # setup run cell qos
	local setup=$1 run=$2 cell=$3 qos=$4 url sub line cpu0 cpu1
	case $setup in
	single) url="tcp://127.0.0.1:$SINGLE" sub=$url ;;
	local) url="tcp://127.0.0.1:${MQTT[0]}" sub=$url ;;
	cross) url="tcp://127.0.0.1:${MQTT[0]}" sub="tcp://127.0.0.1:${MQTT[1]},tcp://127.0.0.1:${MQTT[2]}" ;;
	esac
	# Fan-in's one subscriber: on node 3 when cross-node.
	[[ $cell == fanin* && $setup == cross ]] && sub="tcp://127.0.0.1:${MQTT[2]}"
	cpu0=$(cpu_s)
	# shellcheck disable=SC2086 # FLAGS holds several words
	line=$(timeout 120 "${PIN_TOOL[@]}" "$WORK/bin/starling-bench" -q -url "$url" -sub-url "$sub" ${FLAGS[$cell]} \
		-qos "$qos" -version 4 -duration "$DURATION" -warmup "$WARMUP" 2>"$WORK/err") || true
	cpu1=$(cpu_s)
	if [[ -z $line ]]; then
		line=null
		log "  $setup $cell q$qos: $(tail -n 3 "$WORK/err" | tr '\n' ' ')"
	fi
	printf '{"setup":"%s","run":%d,"cell":"%s","qos":%d,"broker_cpu_s":%s,"result":%s}\n' \
		"$setup" "$run" "$cell" "$qos" "$(jq -n "($cpu1 - $cpu0) / $TICK")" "$line" >>"$OUT.jsonl"
}

cells() { # run setup...
	local run=$1 cell qos setup
	shift
	for cell in $CELLS; do
		for qos in $QOSES; do
			for setup in "$@"; do
				bench "$setup" "$run" "$cell" "$qos"
			done
		done
	done
}

log "cells: $CELLS at QoS $QOSES; $RUNS runs of $DURATION after $WARMUP warm-up; $PINNING"
start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

if ((INTERLEAVE)); then
	# The single node stays up (idle) beside the cluster, and each run
	# measures it right before the cluster's setups: on a machine whose
	# load comes and goes, the ratios then compare neighbouring minutes.
	log "single node, kept up beside the cluster"
	start_node single "$SINGLE"
	wait_port "$SINGLE" "${NODE_PIDS[0]}" single
else
	log "single node"
	start_node single "$SINGLE"
	wait_port "$SINGLE" "${NODE_PIDS[0]}" single
	for run in $(seq "$RUNS"); do
		log "run $run: single"
		cells "$run" single
	done
	stop_nodes
fi

log "three-node cluster"
for i in 0 1 2; do
	peers=()
	for j in 0 1 2; do ((j == i)) || peers+=("127.0.0.1:${ROUTE[$j]}"); done
	start_node "n$((i + 1))" "${MQTT[$i]}" -cluster-name bench -cluster-node "n$((i + 1))" \
		-cluster-listen "127.0.0.1:${ROUTE[$i]}" -cluster-peers "$(IFS=,; echo "${peers[*]}")"
done
for i in 0 1 2; do wait_port "${MQTT[$i]}" "${NODE_PIDS[$((i + INTERLEAVE))]}" "n$((i + 1))"; done
wait_ready
log "cluster ready after $READY_S s"
for run in $(seq "$RUNS"); do
	if ((INTERLEAVE)); then
		log "run $run: single node, cluster all on node 1, cross-node"
		cells "$run" single local cross
	else
		log "run $run: cluster, all on node 1, then cross-node"
		cells "$run" local cross
	fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# Warnings and errors the nodes logged (they run at -log-level warn), minus
# NATS's start-up chatter.
for n in single n1 n2 n3; do
	grep -v -e 'Waiting for routing' -e 'has not established contact' -e 'Metalayer blocking snapshot' \
		"$WORK/$n/log" | sed "s/^/$n: /" || true
done >"$WORK/warnings"
stop_nodes
took=$(($(date +%s) - start))

# --- table ------------------------------------------------------------------
TABLE_JQ='
def r2: . * 100 | round / 100;
def si: if . >= 1e6 then "\(. / 1e4 | round / 100)M" elif . >= 1e3 then "\(. / 100 | round / 10)k" else "\(round)" end;
def dur: if . >= 1000 then "\(. / 100 | round / 10) ms" else "\(round) µs" end;
def lat: .cell == "latency";
def warn: [ (if .result.lost > 0 then "lost \(.result.lost)" else empty end),
            (if .result.duplicates > 0 then "dup \(.result.duplicates)" else empty end),
            (if (.result.backlog_end // 0) > ((.result.rate // 0) / 10) then "behind \(.result.backlog_end)" else empty end),
            (if (.result.errors // []) | length > 0 then "\(.result.errors | length) errors" else empty end) ]
          | if length > 0 then " ⚠ " + join(", ") else "" end;
def text: if .result == null then "failed"
          elif lat then "\(.result.latency.p50_us | dur) / \(.result.latency.p99_us | dur)" + warn
          else (.result.delivered_per_s | si) + warn end;
def mean(f): [ .[] | select(.result != null) | f ] | if length > 0 then add / length else null end;
def ratio(a; b): if a == null or b == null or b == 0 then "—" else "\(a / b | r2)×" end;
group_by([.cell, .qos]) | .[] |
  . as $g | ($g[0] | lat) as $lat |
  [ "single", "local", "cross" ] as $setups |
  (reduce $setups[] as $s ({}; .[$s] = ([ $g[] | select(.setup == $s) ] | sort_by(.run)))) as $by |
  ( if $lat then "latency at \($g[0].result.rate // "?" ) msg/s, 1→2, p50 / p99"
    elif $g[0].cell == "fanin" then "fan-in 8→1, delivered msg/s"
    elif $g[0].cell == "faninp" then "fan-in 8→1 to a persistent session, delivered msg/s"
    else "fan-out 1→100, delivered msg/s" end ) as $name |
  ( $setups | map($by[.] | map(text) | join(" · ")) ) as $cols |
  ( if $lat then
      [ "local", "cross" ] | map(. as $s | "p50 " + ratio($by[$s] | mean(.result.latency.p50_us); $by.single | mean(.result.latency.p50_us))
                                       + ", p99 " + ratio($by[$s] | mean(.result.latency.p99_us); $by.single | mean(.result.latency.p99_us)))
    else
      [ "local", "cross" ] | map(ratio($by[.] | mean(.result.delivered_per_s); $by.single | mean(.result.delivered_per_s)))
    end ) as $ratios |
  "| \($name) | \($g[0].qos) | \($cols | join(" | ")) | \($ratios | join(" | ")) |"
'
CPU_JQ='
def r2: . * 100 | round / 100;
group_by([.cell, .qos]) | .[] | select(.[0].cell != "latency") |
  . as $g |
  ( [ "single", "local", "cross" ] | map(. as $s |
      [ $g[] | select(.setup == $s and .result != null and .result.delivered > 0) | .broker_cpu_s / (.result.delivered / 1e6) | r2 | tostring ]
      | join(" · ")) ) as $cols |
  "| \({fanin: "fan-in 8→1", faninp: "fan-in 8→1, persistent"}[$g[0].cell] // "fan-out 1→100") | \($g[0].qos) | \($cols | join(" | ")) |"
'
{
	echo "# Starling cluster vs single node, $DATE"
	echo
	echo "Command: \`DURATION=$DURATION WARMUP=$WARMUP RUNS=$RUNS RATE=$RATE INTERLEAVE=$INTERLEAVE CELLS=\"$CELLS\" bench/cluster.sh\` ($took s)."
	echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r);"
	echo "$PINNING; load average $load_before before, $load_after after. All nodes on this machine, on loopback."
	echo "Starling $VERSION${CHANGED:+ (changed at build time: ${CHANGED% })}; MQTT 3.1.1 over TCP, 64-byte payloads; fan-out closed loop (window 64), latency open loop."
	echo "Cluster ready $READY_S s after its nodes listened. Runs shown run 1 · run 2; ratios are cluster ÷ single node of the runs' means"
	echo "(msg/s: above 1 is faster; latency: above 1 is slower). ⚠: lost or duplicated messages, behind the offered rate, or errors."
	echo
	echo "Cross-node: the publisher(s) on node 1; fan-out and latency subscribers round robin on nodes 2 and 3, the fan-in subscriber on node 3."
	echo
	echo "| cell | QoS | single node | cluster, all on node 1 | cluster, cross-node | all on node 1 ÷ single | cross-node ÷ single |"
	echo "|---|---|---|---|---|---|---|"
	jq -rs "$TABLE_JQ" "$OUT.jsonl"
	echo
	echo "Broker CPU-seconds per million deliveries (all broker processes, whole run including connection set-up; lower is better):"
	echo
	echo "| cell | QoS | single node | cluster, all on node 1 | cluster, cross-node |"
	echo "|---|---|---|---|---|"
	jq -rs "$CPU_JQ" "$OUT.jsonl"
	echo
	if [[ -s $WORK/warnings ]]; then
		echo "Warnings and errors logged by the nodes (lines: $(wc -l <"$WORK/warnings"); the first 30):"
		echo
		echo '```'
		head -n 30 "$WORK/warnings"
		echo '```'
	else
		echo "The nodes logged no warnings or errors beyond NATS's start-up and shutdown messages."
	fi
} >"$OUT.md"
log "wrote $OUT.md and $OUT.jsonl"
cat "$OUT.md"
