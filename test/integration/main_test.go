package integration

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// TestMain fails the package if any goroutine outlives the tests: every
// broker a test starts must be closed with nothing left behind. The idle
// connection pollers (internal/poll) live as long as the process, like Go's
// own netpoller.
//
// Up to 4 parallel tests run at once: most wait on protocol time (keep
// alive, expiry, slow-consumer timeouts, a verification held on purpose),
// not on the CPU; at 2 (GOMAXPROCS here) a -race run used 85 s of CPU in
// 289 s.
func TestMain(m *testing.M) {
	brokertest.DefaultParallel(4)
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/starling-mqtt/starling/internal/poll.(*poller).run"))
}
