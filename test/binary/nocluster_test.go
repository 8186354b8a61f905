package binary

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/binarytest"
	"github.com/starling-mqtt/starling/internal/freeport"
)

// Without cluster settings the binary runs no NATS at all: the only socket
// it listens on is its MQTT listener. With them (a cluster of one, which
// opens no cluster port), the embedded NATS server's own loopback
// listener shows up, which is what this test would see if the cluster
// code ran unasked.
func TestNoClusterRunsNoNATS(t *testing.T) {
	if got := listeners(t); got != 1 {
		t.Fatalf("single node listens on %d sockets, want 1 (MQTT only)", got)
	}
	if got := listeners(t, "-cluster-name", "solo", "-cluster-listen", freeport.Addr(t)); got < 2 {
		t.Fatalf("a cluster of one listens on %d sockets; the embedded NATS server should add one", got)
	}
}

// listeners runs the binary with extra flags until it serves MQTT (and,
// for a cluster, a moment more) and counts the TCP sockets it listens on.
func listeners(t *testing.T, extra ...string) int {
	t.Helper()
	addr := freeport.Addr(t)
	args := append([]string{"-tcp", addr, "-http", "", "-data", t.TempDir(), "-log-level", "warn"}, extra...)
	p := binarytest.Start(t, addr, nil, bin, args...)
	defer p.Kill()
	time.Sleep(time.Second) // the cluster starts alongside the listeners
	inodes := map[string]bool{}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", p.Pid()))
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	count := 0
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && fields[3] == "0A" && inodes[fields[9]] { // 0A: LISTEN
				count++
			}
		}
		f.Close()
	}
	return count
}
