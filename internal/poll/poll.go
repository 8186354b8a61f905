// Package poll lets an idle connection wait for input without a goroutine:
// its socket is parked in an epoll set watched by a few poller goroutines
// (Linux), and a callback runs once it is readable, its deadline has passed,
// or its owner wakes it (to close it). Elsewhere Park always declines and
// callers keep a goroutine blocked in Read.
package poll

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Callback is what a Waiter calls once: an interface rather than a func
// value, so that an owner such as a connection passes itself and parking
// allocates no method value (a live object of every parked connection).
type Callback interface{ Fire() }

// Func makes a function a Callback.
type Func func()

// Fire calls f.
func (f Func) Fire() { f() }

// Waiter is one parked socket. Its callback runs exactly once.
type Waiter struct {
	fn    Callback
	fired atomic.Bool
	// registered: in the epoll set; under mu.
	registered bool
	// pi is the index of the waiter's poller in pollers (an index, not a
	// pointer: the Waiter stays in the 64-byte class with fn an interface).
	pi uint8
	// mu is held by Park from before the timer starts until the socket is
	// in the epoll set, and by Wake while it takes it out: the socket
	// leaves the set before fn runs, so fn may park it again at once.
	mu    sync.Mutex
	timer *time.Timer // nil without a deadline
	id    uint32
	// fd is the watched descriptor when rc is nil (ParkFD): the caller
	// owns it and calls Unwatch before closing it.
	fd int32
	rc syscall.RawConn
}

// Park watches rc until it is readable (or hung up), deadline passes (zero:
// no deadline), or Wake is called, and then calls fn.Fire once on a new
// goroutine of its own (fn may go on to read and block). It reports false,
// and never calls fn, when the socket cannot be parked (another platform, a
// closed socket): the caller then reads as usual. Once it has reported true
// the caller must not touch what fn uses: fn may already run.
func Park(rc syscall.RawConn, deadline time.Time, fn Callback) (*Waiter, bool) {
	return park(rc, deadline, fn)
}

// ParkFD is Park for a socket held as a bare descriptor, with no net.Conn
// (see Release): it holds no Go socket object while parked. The caller
// keeps fd open until fn runs or Unwatch returns.
func ParkFD(fd int, deadline time.Time, fn Callback) (*Waiter, bool) {
	return parkFD(fd, deadline, fn)
}

// Release duplicates the descriptor of rc, so that the caller may close the
// net.Conn (freeing its netpoller state and addresses) and keep the socket
// open as the bare descriptor returned. Reopen turns it back into a
// net.Conn.
func Release(rc syscall.RawConn) (int, error) { return release(rc) }

// CloseFD closes a descriptor from Release (after Unwatch, if it was
// parked with ParkFD).
func CloseFD(fd int) { closeFD(fd) }

// Reopen makes a net.Conn of a descriptor from Release, which it closes
// (the net.Conn holds a duplicate), whether or not it succeeds.
func Reopen(fd int) (net.Conn, error) { return reopen(fd) }

// Ended reports how the socket of a Release descriptor ended when it has
// no input left to read: io.EOF, or the error a read would return (a
// reset). nil while it may still have input (bytes waiting, or none yet).
func Ended(fd int) error { return ended(fd) }

// Unwatch takes the socket out of the epoll set without running the
// callback: the deadline and Wake still run it. The owner of a ParkFD
// descriptor calls it before closing that descriptor, so that a descriptor
// number reused meanwhile is never touched.
func (w *Waiter) Unwatch() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.delLocked()
	w.mu.Unlock()
}

// Watch puts a waiter taken out by Unwatch back in the epoll set, now for
// rc (a net.Conn of the same socket: see Reopen). It does nothing once the
// callback has run or is due; if rc cannot be watched the callback runs
// now, and the reader it starts finds the socket's state.
func (w *Waiter) Watch(rc syscall.RawConn) { w.watch(rc, -1) }

// WatchFD is Watch for a bare descriptor of the socket (see Release), which
// the caller keeps open until the callback runs or Unwatch returns. It
// reports false, without watching fd, once the callback has run or is due.
func (w *Waiter) WatchFD(fd int) bool { return w.watch(nil, fd) }

func (w *Waiter) watch(rc syscall.RawConn, fd int) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	if w.fired.Load() {
		w.mu.Unlock()
		return false
	}
	w.rc, w.fd = rc, int32(fd)
	ok := w.addLocked()
	w.mu.Unlock()
	if !ok {
		w.Wake()
	}
	return ok
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
	go w.fn.Fire()
}

// Parked reports how many sockets are parked now, all pollers together.
func Parked() int64 { return parked.Load() }

var parked atomic.Int64
