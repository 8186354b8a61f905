// Package poll lets an idle connection wait for input without a goroutine:
// its socket is parked in an epoll set watched by a few poller goroutines
// (Linux), and a callback runs once it is readable, its deadline has passed,
// or its owner wakes it (to close it). Elsewhere Park always declines and
// callers keep a goroutine blocked in Read.
package poll

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Waiter is one parked socket. Its callback runs exactly once.
type Waiter struct {
	fn    func()
	fired atomic.Bool
	// mu is held by Park from before the timer starts until the socket is
	// in the epoll set, and by Wake while it takes it out: the socket
	// leaves the set before fn runs, so fn may park it again at once.
	mu         sync.Mutex
	timer      *time.Timer // nil without a deadline
	registered bool        // in the epoll set
	p          *poller     // nil on platforms without a poller
	id         uint32
	rc         syscall.RawConn
}

// Park watches rc until it is readable (or hung up), deadline passes (zero:
// no deadline), or Wake is called, and then calls fn once on a new
// goroutine of its own (fn may go on to read and block). It reports false,
// and never calls fn, when the socket cannot be parked (another platform, a
// closed socket): the caller then reads as usual. Once it has reported true
// the caller must not touch what fn uses: fn may already run.
func Park(rc syscall.RawConn, deadline time.Time, fn func()) (*Waiter, bool) {
	return park(rc, deadline, fn)
}

// Pending reports whether rc has input (or an end of stream) waiting: a
// reader had better read it than park. True where parking is unsupported.
func Pending(rc syscall.RawConn) bool { return pending(rc) }

// Wait blocks until rc has input (or an end of stream) waiting, without
// reading it, or until the connection's read deadline passes: it returns
// the deadline's error then. Where parking is unsupported it returns nil at
// once.
func Wait(rc syscall.RawConn) error { return wait(rc) }

// Supported reports whether Park can park sockets on this platform.
func Supported() bool { return supported }

// Wake runs the callback now unless it has already run. The owner calls it
// after closing the socket, which removes it from the epoll set silently.
func (w *Waiter) Wake() {
	if w == nil || !w.fired.CompareAndSwap(false, true) {
		return
	}
	w.mu.Lock()
	if w.timer != nil {
		w.timer.Stop()
	}
	w.unwatchLocked()
	w.mu.Unlock()
	go w.fn()
}

// Parked reports how many sockets are parked now, all pollers together.
func Parked() int64 { return parked.Load() }

var parked atomic.Int64
