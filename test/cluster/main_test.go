package cluster_test

import (
	"os"
	"testing"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// TestMain runs up to 4 tests at once: each starts its own cluster and
// mostly waits on cluster time (routes, JetStream elections, a node
// declared lost after seconds of silence), not on the CPU. One at a time,
// the package took 146 s of wall time for 64 s of CPU.
// With 8 at once on a loaded 2-core machine, heartbeats starved and a
// node's lease lapsed mid-test.
func TestMain(m *testing.M) {
	os.Exit(brokertest.RunParallel(m, 4))
}
