package cluster

import (
	"os"
	"testing"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// TestMain runs up to 4 tests at once. Each test starts its own cluster
// and mostly waits on cluster time (JetStream elections, heartbeats, a
// node declared lost after deadAfter of silence), not on the CPU: run one
// at a time, the package took 265 s of wall time for 58 s of CPU.
// With 8 at once on a loaded 2-core machine, heartbeats starved and a
// node's lease lapsed mid-test.
//
// Tests that set a package-level hook or timing (fetchFault,
// committedHook, claimWriteFault, claimMuted, recoveredHook, retainFault,
// connectHold, xferIdle, plainQueue, retainTries) do not call t.Parallel:
// Go runs every such test to its end before the parallel ones start, so a
// hook reaches only the nodes of the test that set it.
func TestMain(m *testing.M) {
	os.Exit(brokertest.RunParallel(m, 4))
}
