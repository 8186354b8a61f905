package brokertest

import (
	"testing"
	"time"
)

// WaitFor polls cond every 20 ms until it returns nil, and fails the test
// with cond's last error once Patience has passed. cond's error says what
// is still missing (for the failure message).
func WaitFor(t testing.TB, cond func() error) {
	t.Helper()
	Poll(t, 20*time.Millisecond, Patience(t), cond)
}

// WaitWithin is WaitFor with a bound of its own, for a test whose claim
// is that something happens within d.
func WaitWithin(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	Poll(t, 20*time.Millisecond, d, cond)
}

// Poll calls cond every interval until it returns nil, and fails the test
// with cond's last error once within has passed; it returns how many
// calls it took (connects retried while refused report it).
func Poll(t testing.TB, interval, within time.Duration, cond func() error) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for tries := 1; ; tries++ {
		err := cond()
		if err == nil {
			return tries
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v (%d tries): %v", within, tries, err)
		}
		time.Sleep(interval)
	}
}
