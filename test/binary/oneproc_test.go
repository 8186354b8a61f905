// Package binary runs the built starling binary under conditions a test
// inside the same process cannot give it, such as a single P.
package binary

import (
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/starling-mqtt/starling/internal/binarytest"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/loadgen"
)

var bin, benchBin string

func TestMain(m *testing.M) {
	binarytest.Main(m, map[string]*string{"cmd/starling": &bin, "cmd/starling-bench": &benchBin})
}

// start runs the binary with env added, on a free loopback port, until the
// test ends; pinned to cpu (taskset) when cpu is not "".
func start(t *testing.T, cpu string, env ...string) string {
	t.Helper()
	addr := freeport.Addr(t)
	args := []string{bin, "-tcp", addr, "-http", "", "-data", t.TempDir(), "-log-level", "warn"}
	if cpu != "" {
		args = append([]string{"taskset", "-c", cpu}, args...)
	}
	binarytest.Start(t, addr, env, args[0], args[1:]...)
	return addr
}

// With one P (GOMAXPROCS=1, as on one core), connections parked in epoll
// (idle_poll, the default) must be woken at once. The idle poller once
// waited in a blocking epoll_wait, which held the only P until the
// runtime took it back, and closed-loop publishers stalled for a second or
// more at a time (2 of 5 runs of this scenario). Stalls counts publishers
// that made no progress for StallTimeout.
func TestOneProcParkedConnectionsWake(t *testing.T) {
	// Pinned to one CPU as well, as bench/compare.sh runs it: that is where
	// the stalls showed.
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Fatal("taskset (util-linux) is needed")
	}
	addr := start(t, "0", "GOMAXPROCS=1")
	// The load tool on the other CPU, as compare.sh runs it.
	for i := range 5 {
		out, err := exec.Command("taskset", "-c", "1", benchBin, "-q", "-url", "tcp://"+addr, "-scenario", "pairs",
			"-duration", "1s", "-warmup", "200ms").Output()
		if err != nil {
			t.Fatalf("run %d: starling-bench: %v", i, err)
		}
		var r loadgen.Result
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("run %d: %v: %s", i, err, out)
		}
		if err := r.Check(); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if r.Stalls != 0 {
			t.Fatalf("run %d: %d times a publisher made no progress for 1 s (%.0f msg/s delivered)", i, r.Stalls, r.DeliveredPerSec)
		}
	}
}
