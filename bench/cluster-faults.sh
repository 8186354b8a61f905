#!/usr/bin/env bash
# bench/cluster-faults.sh: the long form of the cluster fault-injection
# suite (test/clusterfault). It runs TestClusterFaults with many cycles of
# each fault against three Starling processes on loopback and prints the
# results as a markdown table: per fault kind, the cycles, the QoS 1 and
# QoS 2 messages acknowledged, lost and duplicated, and the time to recover.
# The table is also written to bench/results/cluster-faults-<date>.md, with
# the test's log next to it (.log).
#
#   bench/cluster-faults.sh                       # CYCLES=100: hours
#   CYCLES=10 bench/cluster-faults.sh
#   CYCLES=20 HOLD=30s KINDS=pause-node,partition-node bench/cluster-faults.sh
#
# Variables:
#   CYCLES   cycles of each fault (100)
#   HOLD     how long a node stays killed, paused or cut off per cycle (5s)
#   KINDS    comma-separated fault names (all): kill-publisher-node,
#            kill-subscriber-node, kill-third-node, pause-node,
#            partition-node, rolling-restart, wipe-node
#   RACE     1: build the nodes with the race detector (slower)
#   TIMEOUT  go test's -timeout (10m per cycle of every fault, at least 30m)
#   OUT      output path without extension (bench/results/cluster-faults-<date>)
# Everything the test starts it stops itself; the nodes die with it.
set -euo pipefail

cd "$(dirname "$0")/.."
for arg in "$@"; do
	case $arg in
	*=*) export "${arg?}" ;; # CYCLES=100 as an argument works too
	*)
		echo "usage: $0 [CYCLES=n] [HOLD=d] [KINDS=a,b] [RACE=1]" >&2
		exit 2
		;;
	esac
done
CYCLES=${CYCLES:-100}
HOLD=${HOLD:-5s}
KINDS=${KINDS:-}
RACE=${RACE:-}
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-bench/results/cluster-faults-$DATE}
if [[ -z ${TIMEOUT:-} ]]; then
	TIMEOUT="$((CYCLES * 10 < 30 ? 30 : CYCLES * 10))m"
fi
mkdir -p "$(dirname "$OUT")"
# go test runs in the package's folder: the report path must be absolute.
case $OUT in
/*) ;;
*) OUT="$PWD/$OUT" ;;
esac

VERSION=$(git describe --always --dirty 2>/dev/null || echo '?')
echo "$(date -u +%H:%M:%S) running TestClusterFaults: CYCLES=$CYCLES HOLD=$HOLD KINDS=${KINDS:-all}, timeout $TIMEOUT; log in $OUT.log" >&2
start=$(date +%s)
status=0
STARLING_FAULT_CYCLES=$CYCLES STARLING_FAULT_HOLD=$HOLD STARLING_FAULT_KINDS=$KINDS STARLING_FAULT_RACE=$RACE \
	STARLING_FAULT_REPORT="$OUT.table" \
	go test -count=1 -timeout "$TIMEOUT" -run '^TestClusterFaults$' -v ./test/clusterfault/ >"$OUT.log" 2>&1 || status=$?
took=$(($(date +%s) - start))

{
	echo "# Starling cluster under faults, $DATE"
	echo
	echo "Command: \`CYCLES=$CYCLES HOLD=$HOLD${KINDS:+ KINDS=$KINDS}${RACE:+ RACE=$RACE} bench/cluster-faults.sh\` ($took s, go test exit status $status)."
	echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r). Starling $VERSION."
	echo "Three nodes on loopback, each cluster route through a proxy; clients: paho.golang (MQTT 5) and paho.mqtt.golang (3.1.1)."
	echo
	if [[ -s $OUT.table ]]; then
		cat "$OUT.table"
	else
		echo "The test wrote no table; the end of its log:"
		echo
		echo '```'
		tail -n 40 "$OUT.log"
		echo '```'
	fi
	failures=$(grep -E '^\s+suite_test.go:[0-9]+: (node crash|cycle [0-9]+ failed|cluster not serving|QoS [12]: [0-9]+ (acknowledged|duplicate)|no traffic)' "$OUT.log" | head -n 20 || true)
	if [[ -n $failures ]]; then
		echo
		echo "Failures (the first 20; the log has all):"
		echo
		echo '```'
		echo "$failures" | cut -c1-400
		echo '```'
	fi
} >"$OUT.md"
rm -f "$OUT.table"
cat "$OUT.md"
echo "$(date -u +%H:%M:%S) wrote $OUT.md and $OUT.log" >&2
exit "$status"
