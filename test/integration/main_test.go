package integration

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every
// broker a test starts must be closed with nothing left behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
