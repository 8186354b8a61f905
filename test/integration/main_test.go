package integration

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every
// broker a test starts must be closed with nothing left behind. The idle
// connection pollers (internal/poll) live as long as the process, like Go's
// own netpoller.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/starling-mqtt/starling/internal/poll.(*poller).run"))
}
