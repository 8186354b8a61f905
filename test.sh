#!/usr/bin/env bash
# test.sh runs every Starling test: go vet, then go test -race over all
# packages (unit, fuzz seeds, integration and end-to-end). It first installs
# what the tests need and the machine lacks, saying what it installs.
#
#   ./test.sh                   everything
#   ./test.sh ./internal/...    only these packages
#
# To add a tool: write a need_<tool> function below and call it from main.
set -euo pipefail
cd "$(dirname "$0")"

log() { echo "test.sh: $*" >&2; }

# as_root runs a command as root, through sudo only when not root already.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	else
		sudo "$@"
	fi
}

apt_updated=false
# apt_install installs Debian packages, running apt-get update once first.
# apt's own output is shown only if it fails.
apt_install() {
	local out
	if ! $apt_updated; then
		log "apt-get update"
		if ! out=$(as_root apt-get update 2>&1); then
			echo "$out" >&2
			log "apt-get update failed"
			exit 1
		fi
		apt_updated=true
	fi
	log "installing (apt): $*"
	if ! out=$(as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" 2>&1); then
		echo "$out" >&2
		log "apt-get install $* failed"
		exit 1
	fi
	log "installed: $*"
}

need_go() {
	if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
		export PATH="/usr/local/go/bin:$PATH"
	fi
	if ! command -v go >/dev/null; then
		log "go not found: install Go (see go.mod for the version)"
		exit 1
	fi
}

# need_cc: go test -race needs cgo, so a C compiler.
need_cc() {
	if ! command -v gcc >/dev/null; then
		log "gcc not found (go test -race needs cgo)"
		apt_install gcc libc6-dev
	fi
}

# need_mosquitto_clients: mosquitto_pub and mosquitto_sub, third-party MQTT
# clients the integration tests drive.
need_mosquitto_clients() {
	if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
		log "mosquitto_pub not found"
		apt_install mosquitto-clients
	fi
}

# need_mosquitto: Debian's Mosquitto broker, the remote end of the bridge
# tests in test/bridge (started by each test on a free loopback port).
need_mosquitto() {
	if [ ! -x /usr/sbin/mosquitto ]; then
		log "mosquitto not found"
		apt_install mosquitto
	fi
}

# need_node: node and npm, and MQTT.js with its dependencies in
# test/node/node_modules exactly as test/node/package-lock.json pins them
# (npm ci), for test/integration/ws_mqttjs_test.go. npm ci runs again when
# the lock file is newer than what was installed.
need_node() {
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		log "node or npm not found"
		apt_install nodejs npm
	fi
	local dir=test/node out
	if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
		log "installing (npm ci): $dir/node_modules from $dir/package-lock.json"
		if ! out=$(npm ci --prefix "$dir" --no-audit --no-fund 2>&1); then
			echo "$out" >&2
			log "npm ci --prefix $dir failed"
			exit 1
		fi
		log "installed: $dir/node_modules"
	fi
}

# need_chromium: Debian's Chromium, which test/browser drives headless
# (chromedp) to test the dashboard.
need_chromium() {
	if [ ! -x /usr/bin/chromium ]; then
		log "chromium not found"
		apt_install chromium
	fi
}

main() {
	need_go
	need_cc
	need_mosquitto_clients
	need_mosquitto
	need_node
	need_chromium

	# Every tool a test needs is installed above, so no test has a reason
	# to skip for a missing one: with CI=true those tests fail instead.
	export CI="${CI:-true}"

	local pkgs=("$@")
	if [ ${#pkgs[@]} -eq 0 ]; then
		pkgs=(./...)
	fi
	log "$(go version)"
	# vet with -race: its compiled dependencies are then the ones go test
	# -race reuses; plain vet compiled everything a second time (cold,
	# internal/config alone: 361 s before, 155 s after on a loaded 2-core
	# machine).
	log "go vet -race ${pkgs[*]}"
	CGO_ENABLED=1 go vet -race "${pkgs[@]}"
	# -vet=off: go test's own vet (a subset of go vet's analyzers) would
	# check again what go vet just checked (uncached, a minute of CPU over
	# the module: 44 s user, 17 s system).
	# -p 4: four test binaries at once on two cores. The longest packages
	# (internal/cluster, test/clusterfault, test/cluster) mostly wait on
	# timers and other processes: with go test's default of one per CPU
	# the run used 0.9 of its 2 CPUs.
	log "go test -race -p 4 -count=1 -vet=off -timeout 20m ${pkgs[*]}"
	CGO_ENABLED=1 go test -race -p 4 -count=1 -vet=off -timeout 20m "${pkgs[@]}"
	if [ $# -eq 0 ]; then
		# Pooled buffers overwritten as they go back (internal/bufpool): a
		# use after release fails the pooled-message tests at once.
		log "go test -tags starling_poison (pooled-message tests)"
		go test -tags starling_poison -count=1 -timeout 10m -run 'Pooled|Poison' ./internal/session ./internal/conn ./test/integration
		# Allocations per QoS 0 publish: counted without -race, under
		# which sync.Pool drops what it holds.
		log "go test (allocation tests, without -race)"
		go test -count=1 -timeout 5m -run 'NoAllocs' ./internal/broker
	fi
}

main "$@"
