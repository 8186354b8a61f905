// Package binary runs the built starling binary under conditions a test
// inside the same process cannot give it, such as a single P.
package binary

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/loadgen"
)

var bin, benchBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "starling-binary")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "starling")
	benchBin = filepath.Join(dir, "starling-bench")
	for out, pkg := range map[string]string{bin: "../../cmd/starling", benchBin: "../../cmd/starling-bench"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// start runs the binary with env added, on a free loopback port, until the
// test ends; pinned to cpu (taskset) when cpu is not "".
func start(t *testing.T, cpu string, env ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{bin, "-tcp", addr, "-http", "", "-data", t.TempDir(), "-log-level", "warn"}
	if cpu != "" {
		args = append([]string{"taskset", "-c", cpu}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return addr
		}
	}
	t.Fatal("starling did not start listening")
	return ""
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
