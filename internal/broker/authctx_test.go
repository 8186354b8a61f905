package broker

import (
	"context"
	"errors"
	"testing"
	"time"
)

// authCtx behaves as a context with a deadline: Done closes at the
// deadline with DeadlineExceeded, or on cancel with Canceled, and a context
// derived from it ends with it.
func TestAuthCtx(t *testing.T) {
	c := newAuthCtx(time.Hour)
	if err := c.Err(); err != nil {
		t.Fatalf("Err before the deadline: %v", err)
	}
	if dl, ok := c.Deadline(); !ok || time.Until(dl) < 59*time.Minute {
		t.Fatalf("Deadline %v %v", dl, ok)
	}
	child, stop := context.WithCancel(c)
	defer stop()
	c.cancel()
	<-c.Done()
	<-child.Done()
	if !errors.Is(c.Err(), context.Canceled) || !errors.Is(child.Err(), context.Canceled) {
		t.Fatalf("after cancel: %v, child %v", c.Err(), child.Err())
	}

	c = newAuthCtx(time.Millisecond)
	<-c.Done() // made before the deadline: closed by its timer
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("after the deadline: %v", c.Err())
	}
	c.cancel()
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("cancel after the deadline changed Err to %v", c.Err())
	}

	c = newAuthCtx(-time.Second) // past already: Err says so with no Done
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("past deadline, no Done: %v", c.Err())
	}
	<-c.Done()

	// Without Done, nothing is armed: a connect whose authenticator does
	// not wait makes no timer.
	if n := testing.AllocsPerRun(100, func() {
		c := newAuthCtx(time.Hour)
		_ = c.Err()
		c.cancel()
	}); n > 1 {
		t.Errorf("a context never waited on: %v allocations, want at most 1", n)
	}
}
