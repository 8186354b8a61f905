package browser

import (
	"os"
	"testing"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// TestMain runs up to 3 tests at once, each with its own broker and
// Chromium: they mostly wait on the dashboard's one-second refresh, not on
// the CPU (one at a time, the package took 208 s of wall time for 54 s of
// CPU, Chromium's included).
func TestMain(m *testing.M) {
	os.Exit(brokertest.RunParallel(m, 3))
}
