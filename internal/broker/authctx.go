package broker

import (
	"context"
	"sync"
	"time"
)

// authCtx is the context an Authenticator gets for one CONNECT: a deadline
// whose channel and timer are made only when Done is called.
// context.WithTimeout arms a timer and allocates two 112-byte objects per
// connect; the built-in authenticator never waits on the context unless
// password verifications queue, so most connects need neither, and garbage
// of every connect in the allocation class of the records idle clients
// keep holds their spans resident.
type authCtx struct {
	deadline time.Time
	mu       sync.Mutex
	done     chan struct{} // made on first Done
	timer    *time.Timer   // closes done at the deadline; nil until Done
	err      error         // set when done closes (or would have)
}

func newAuthCtx(timeout time.Duration) *authCtx {
	return &authCtx{deadline: time.Now().Add(timeout)}
}

func (c *authCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *authCtx) Value(any) any               { return nil }

func (c *authCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		switch d := time.Until(c.deadline); {
		case c.err != nil:
			close(c.done)
		case d <= 0:
			c.err = context.DeadlineExceeded
			close(c.done)
		default:
			c.timer = time.AfterFunc(d, func() { c.end(context.DeadlineExceeded) })
		}
	}
	return c.done
}

func (c *authCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !time.Now().Before(c.deadline) {
		c.endLocked(context.DeadlineExceeded)
	}
	return c.err
}

// cancel ends the context once authentication returns (an Authenticator
// may have kept it).
func (c *authCtx) cancel() { c.end(context.Canceled) }

func (c *authCtx) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(err)
}

func (c *authCtx) endLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.done != nil {
		close(c.done)
	}
}
