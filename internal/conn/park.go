package conn

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/starling-mqtt/starling/internal/poll"
)

// ParkAfter is how long a connection that has been active waits for its
// next packet in a goroutine before it is parked: a client that keeps
// sending is read without a park and a wake-up per packet.
const ParkAfter = 20 * time.Millisecond

// Park hands a connection that waits for its next packet to the poller
// (internal/poll) so that no goroutine waits for it. It first waits up to
// grace (such as ParkAfter; not beyond deadline) for input, and reports
// false if some arrives. Otherwise resume runs once, on a new goroutine
// that it may keep (it is the reader now), when input arrives, deadline passes or the connection is closed, and
// should then call ReadPacket with the same deadline. Park reports false,
// and never calls resume, when the connection cannot be parked: input
// already buffered, a transport that buffers (TLS, PROXY protocol, a
// WebSocket with bytes of its own), a full queue, another platform. After
// true the caller must leave the Conn to resume.
func (c *Conn) Park(deadline time.Time, grace time.Duration, resume func()) bool {
	if c.Buffered() || !poll.Supported() {
		return false
	}
	tc, rc := rawConn(c.nc)
	if rc == nil {
		return false
	}
	c.mu.Lock()
	full := len(c.queue) >= MaxPending || c.closed
	c.mu.Unlock()
	if full {
		return false
	}
	until := time.Now().Add(grace)
	if !deadline.IsZero() && deadline.Before(until) {
		return false // due soon anyway
	}
	if grace <= 0 {
		if poll.Pending(rc) {
			c.ready = true
			return false
		}
	} else {
		// Wait on the socket itself: nothing is read, so a WebSocket frame
		// is never cut by this deadline; ReadPacket sets its own.
		if err := tc.SetReadDeadline(until); err != nil {
			return false
		}
		if err := poll.Wait(rc); !errors.Is(err, os.ErrDeadlineExceeded) {
			c.ready = true
			return false // input (or an error for ReadPacket to report)
		}
	}
	// Parked: no buffer, and the smallest one when input comes again.
	c.releaseReader()
	c.releasePub()
	c.rsize, c.filled = 0, false
	w, ok := poll.Park(rc, deadline, resume)
	if !ok {
		return false
	}
	c.mu.Lock()
	c.parked = w
	closed := c.closed
	c.mu.Unlock()
	if closed {
		// Close ran before c.parked was set and may have missed it; the
		// closed socket has left the epoll set.
		w.Wake()
	}
	return true
}

// wakeParked resumes a parked reader after the socket was closed: it will
// read the error and end. Called after Close set closed.
func (c *Conn) wakeParked() {
	c.mu.Lock()
	w := c.parked
	c.mu.Unlock()
	w.Wake()
}

// rawConn returns the socket of a connection that may be parked: a plain
// TCP connection, or a WebSocket over one that has nothing buffered.
func rawConn(nc net.Conn) (*net.TCPConn, syscall.RawConn) {
	if ic, ok := nc.(interface{ IdleConn() (net.Conn, bool) }); ok {
		inner, ok := ic.IdleConn()
		if !ok {
			return nil, nil
		}
		nc = inner
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	return tc, rc
}
