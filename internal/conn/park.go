package conn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/starling-mqtt/starling/internal/poll"
)

// ParkAfter is how long a connection that has been active waits for its
// next packet in a goroutine before it is parked: a client that keeps
// sending is read without a park and a wake-up per packet.
const ParkAfter = 20 * time.Millisecond

// ReleaseAfter is how long a connection must have stayed parked, before
// input woke it, for its next park to release its socket (parkReleased):
// reopening and releasing cost about fifteen system calls, which a client
// sending every few hundred milliseconds would pay each time. Such a
// connection parks with its net.Conn until it is quiet this long again.
const ReleaseAfter = time.Second

// writerWait bounds how long the park right after CONNECT waits for the
// writer sending the CONNACK.
const writerWait = 5 * time.Millisecond

// giveUp wakes the park waiting for the writer after CONNECT once
// writerWait has passed. Pooled: a timer made per connect was a 112-byte
// garbage object of every connection, in the class of records idle
// connections keep. A pooled timer that fires late may wake a later
// connection's wait, which checks its condition again.
type giveUp struct {
	t *time.Timer
	c atomic.Pointer[Conn]
}

var giveUps = sync.Pool{New: func() any {
	g := &giveUp{}
	g.t = time.AfterFunc(time.Hour, g.fire)
	g.t.Stop()
	return g
}}

// conds are the conditions Park waits for the writer on.
var conds = sync.Pool{New: func() any { return sync.NewCond(nil) }}

func (g *giveUp) fire() {
	if c := g.c.Load(); c != nil {
		c.mu.Lock()
		c.broadcastLocked()
		c.mu.Unlock()
	}
}

// Park hands a connection that waits for its next packet to the poller
// (internal/poll) so that no goroutine waits for it. It first waits up to
// grace (such as ParkAfter; not beyond deadline) for input, and reports
// false if some arrives. Otherwise the owner's Resume runs once, on a new
// goroutine that it may keep (it is the reader now), when input arrives,
// deadline passes or the connection is closed, and should then call
// ReadPacket with the same deadline. Park reports false, and never calls
// Resume, when the connection cannot be parked: no owner, input already
// buffered, a transport that buffers (TLS, PROXY protocol, a WebSocket
// with bytes of its own), a full queue, another platform. After true the
// caller must leave the Conn to Resume.
func (c *Conn) Park(deadline time.Time, grace time.Duration) bool {
	if c.owner == nil || c.Buffered() || !poll.Supported() {
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
	// Under mu: the callback, which may run as soon as the socket is
	// watched, waits for it and finds the socket as left here.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if grace <= 0 && c.writing {
		// Right after CONNECT the writer is sending the CONNACK: wait for
		// it (a few bytes to a fresh socket) rather than watch the socket
		// now and again, released, when the writer stops. Not long: a
		// writer with a backlog for a slow client parks the reader as
		// before (keep alive is enforced meanwhile).
		g := giveUps.Get().(*giveUp)
		g.c.Store(c)
		g.t.Reset(writerWait)
		if c.drained == nil {
			// Pooled too: a condition made per connect was a 64-byte
			// garbage object in the class of the parked socket's Waiter.
			c.drained = conds.Get().(*sync.Cond)
			c.drained.L = &c.mu
		}
		for until := time.Now().Add(writerWait); c.writing && !c.closed && !c.closing && time.Now().Before(until); {
			c.waitDrainedLocked()
		}
		g.t.Stop()
		g.c.Store(nil)
		giveUps.Put(g)
		// Only the reader (here, or ReadPacket) waits on it: a parked
		// connection need not keep it. Nobody else holds it: broadcasts
		// find it under mu, and no one waits now.
		d := c.drained
		c.drained = nil
		d.L = nil
		conds.Put(d)
		if c.closed {
			return false
		}
	}
	c.asleep = true
	c.parkedAt = time.Now().UnixNano()
	release := !c.busy && !c.closing
	if release && !c.writing {
		// No writer uses the socket: keep it as a bare descriptor.
		if w, ok := c.parkReleased(tc, rc, deadline); ok {
			c.parked = w
			return true
		}
	}
	w, ok := poll.Park(rc, deadline, (*waker)(c))
	if !ok {
		c.asleep = false
		return false
	}
	c.parked = w
	// Most often the writer is sending the CONNACK or SUBACK the client
	// waited for: release once it stops.
	c.relOnStop = release && c.writing
	return true
}

// parkReleased parks the socket as a bare descriptor and closes the
// net.Conn it came in (the WebSocket adapter keeps a placeholder): an idle
// connection holds no net.TCPConn, no netpoller entry and no addresses.
// Anything that needs the socket again (the reader on wake-up, the writer,
// Close) reopens it first (attachLocked). The caller holds mu.
func (c *Conn) parkReleased(tc *net.TCPConn, rc syscall.RawConn, deadline time.Time) (*poll.Waiter, bool) {
	fd, err := poll.Release(rc)
	if err != nil {
		return nil, false
	}
	w, ok := poll.ParkFD(fd, deadline, (*waker)(c))
	if !ok {
		poll.CloseFD(fd)
		return nil, false
	}
	c.dropSocketLocked(tc, fd)
	return w, true
}

// releaseParkedLocked releases the socket of a connection that parked
// while its writer ran, once the writer is done (see parkReleased). Only
// that once: a connection whose socket was reopened for a delivery keeps
// it until its reader parks again, so a subscriber that keeps receiving
// does not pay a reopening per delivery. The caller holds mu.
func (c *Conn) releaseParkedLocked() {
	c.broadcastLocked() // a Park waiting for the writer (grace 0)
	if !c.relOnStop {
		return
	}
	c.relOnStop = false
	if !c.asleep || c.released || c.closing || c.closed {
		return // woken already
	}
	tc, rc := rawConn(c.nc)
	if rc == nil {
		return
	}
	fd, err := poll.Release(rc)
	if err != nil {
		return
	}
	w := c.parked
	w.Unwatch()
	if !w.WatchFD(fd) {
		// Woken meanwhile (or not watchable: then woken now); the reader
		// carries on with the net.Conn.
		poll.CloseFD(fd)
		return
	}
	c.dropSocketLocked(tc, fd)
}

// dropSocketLocked closes the net.Conn of a socket now held as fd, leaving
// a placeholder. The caller holds mu.
func (c *Conn) dropSocketLocked(tc *net.TCPConn, fd int) {
	c.setSocketLocked(releasedSocket{})
	tc.Close() // the duplicate descriptor keeps the socket open
	c.fd, c.released = int32(fd), true
}

// attachLocked gives a parked connection whose socket was released a
// net.Conn again, before anything uses the socket. The poller keeps
// watching it (the new net.Conn's) unless its callback has run. The caller
// holds mu.
func (c *Conn) attachLocked() {
	if !c.released {
		return
	}
	c.released = false
	w := c.parked
	w.Unwatch() // before the descriptor is closed, as Reopen does
	var nc net.Conn = releasedSocket{}
	if sock, err := poll.Reopen(int(c.fd)); err == nil {
		nc = sock
	} // else out of descriptors: every use of the socket fails, and the reader ends the connection
	c.fd = -1
	c.setSocketLocked(nc)
	if _, rc := rawConn(c.nc); rc != nil {
		w.Watch(rc)
	} else {
		// Nothing to watch: the reader finds out.
		w.Wake()
	}
}

// waker is the poller's callback: a conversion of the Conn, so that
// parking makes no method value.
type waker Conn

func (w *waker) Fire() { (*Conn)(w).wake() }

// wake is the poller's callback: the socket is readable, the deadline
// passed or the connection closed. It carries on on the poller's goroutine.
func (c *Conn) wake() {
	c.mu.Lock()
	c.relOnStop = false
	c.busy = time.Now().UnixNano()-c.parkedAt < int64(ReleaseAfter)
	if c.released {
		if err := poll.Ended(int(c.fd)); err != nil {
			// The client has gone: nothing is left to read, so no
			// net.Conn is made only to read the end and close it.
			c.released = false
			c.parked.Unwatch()
			poll.CloseFD(int(c.fd))
			c.setSocketLocked(endedSocket{err})
		}
	}
	c.attachLocked()
	c.asleep = false
	c.mu.Unlock()
	c.owner.Resume()
}

// setSocketLocked sets the socket: c.nc itself, or the one inside the
// WebSocket adapter. The caller holds mu and nothing reads or writes.
func (c *Conn) setSocketLocked(nc net.Conn) {
	if a, isAdapter := c.nc.(socketHolder); isAdapter {
		a.SetIdleConn(nc)
	} else {
		c.nc = nc
	}
}

// endedSocket stands for the socket of a parked connection whose client
// went away (closed or reset) while it was released: reads return how it
// ended, as the socket's would, and writes are discarded, as a socket whose
// peer has gone would take them before failing.
type endedSocket struct{ err error }

func (e endedSocket) Read([]byte) (int, error)       { return 0, e.err }
func (endedSocket) Write(p []byte) (int, error)      { return len(p), nil }
func (endedSocket) Close() error                     { return nil }
func (endedSocket) LocalAddr() net.Addr              { return nil }
func (endedSocket) RemoteAddr() net.Addr             { return nil }
func (endedSocket) SetDeadline(time.Time) error      { return nil }
func (endedSocket) SetReadDeadline(time.Time) error  { return nil }
func (endedSocket) SetWriteDeadline(time.Time) error { return nil }

// socketHolder is a transport that wraps the socket and can hold a
// placeholder for it while it is parked released (the WebSocket adapter).
type socketHolder interface {
	SetIdleConn(net.Conn)
}

// errReleased is what a released socket's placeholder returns: nothing
// should use it.
var errReleased = fmt.Errorf("conn: socket released while parked: %w", net.ErrClosed)

// releasedSocket stands for a socket parked as a bare descriptor. It holds
// nothing: every operation fails.
type releasedSocket struct{}

func (releasedSocket) Read([]byte) (int, error)         { return 0, errReleased }
func (releasedSocket) Write([]byte) (int, error)        { return 0, errReleased }
func (releasedSocket) Close() error                     { return nil }
func (releasedSocket) LocalAddr() net.Addr              { return nil }
func (releasedSocket) RemoteAddr() net.Addr             { return nil }
func (releasedSocket) SetDeadline(time.Time) error      { return errReleased }
func (releasedSocket) SetReadDeadline(time.Time) error  { return errReleased }
func (releasedSocket) SetWriteDeadline(time.Time) error { return errReleased }

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
