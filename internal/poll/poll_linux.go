//go:build linux

package poll

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poller is one epoll set and the goroutine that waits on it. The set is
// separate from Go's own netpoller: a socket may be in both, and is only
// read through Go's net package.
type poller struct {
	epfd    int
	file    *os.File // epfd as a pollable file, when Go's netpoller takes it
	mu      sync.Mutex
	next    uint32
	waiters map[uint32]*Waiter
}

var (
	startOnce sync.Once
	pollers   []*poller
	rr        uint64
	rrMu      sync.Mutex
)

// start creates the pollers, once per process: they live as long as it,
// like Go's netpoller. None when epoll is unavailable: Park then declines.
func start() {
	n := min(runtime.GOMAXPROCS(0), 4) // at most 256: Waiter.pi is a byte
	for i := 0; i < n; i++ {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		p := &poller{epfd: fd, waiters: make(map[uint32]*Waiter)}
		pollers = append(pollers, p)
		go p.run()
	}
}

func park(rc syscall.RawConn, deadline time.Time, fn Callback) (*Waiter, bool) {
	return parkOn(rc, -1, deadline, fn)
}

func parkFD(fd int, deadline time.Time, fn Callback) (*Waiter, bool) {
	return parkOn(nil, fd, deadline, fn)
}

// parkOn parks rc, or fd when rc is nil.
func parkOn(rc syscall.RawConn, fd int, deadline time.Time, fn Callback) (*Waiter, bool) {
	startOnce.Do(start)
	if len(pollers) == 0 {
		return nil, false
	}
	rrMu.Lock()
	pi := uint8(rr % uint64(len(pollers)))
	rr++
	rrMu.Unlock()
	p := pollers[pi]

	w := &Waiter{fn: fn, pi: pi, rc: rc, fd: int32(fd)}
	p.mu.Lock()
	for {
		// IDs wrap after 2^32 parks; skip one still in use.
		p.next++
		if _, used := p.waiters[p.next]; !used {
			break
		}
	}
	w.id = p.next
	p.waiters[w.id] = w
	p.mu.Unlock()

	// A Wake that comes meanwhile (the timer, the owner, the event) waits
	// for mu and finds the socket registered.
	w.mu.Lock()
	if !deadline.IsZero() {
		w.timer = time.AfterFunc(time.Until(deadline), w.Wake)
	}
	if w.addLocked() {
		w.mu.Unlock()
		return w, true
	}
	w.mu.Unlock()
	if !w.fired.CompareAndSwap(false, true) {
		return w, true // the timer has fired: fn runs
	}
	w.mu.Lock()
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Unlock()
	p.forget(w.id)
	return nil, false
}

// home is the waiter's poller.
func (w *Waiter) home() *poller { return pollers[w.pi] }

// epollOp is one epoll_ctl (or, op 0, a descriptor's duplication for
// release) on a socket that may only be reached through its RawConn's
// Control. Pooled, with its method value made once: a closure made per
// call escaped with what it captured, three garbage objects per park in
// the small allocation classes that idle connections' records share.
type epollOp struct {
	epfd, op int
	ev       unix.EpollEvent
	nfd      int // op 0: the duplicate
	err      error
	fn       func(fd uintptr)
}

var epollOps = sync.Pool{New: func() any {
	o := &epollOp{}
	o.fn = o.run
	return o
}}

func (o *epollOp) run(fd uintptr) {
	if o.op == 0 {
		o.nfd, o.err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		return
	}
	var ev *unix.EpollEvent
	if o.op == unix.EPOLL_CTL_ADD {
		ev = &o.ev
	}
	o.err = unix.EpollCtl(o.epfd, o.op, int(fd), ev)
}

// ctl runs epoll_ctl op on the watched descriptor; false if the socket is
// closed (a net.Conn's descriptor is then never touched).
func (w *Waiter) ctl(op int) (bool, error) {
	o := epollOps.Get().(*epollOp)
	// Level-triggered and one-shot: bytes that are already there report
	// at once, and a socket reports once per park.
	o.epfd, o.op = w.home().epfd, op
	o.ev = unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(w.id)}
	ok := true
	if w.rc == nil {
		o.run(uintptr(w.fd))
	} else {
		ok = w.rc.Control(o.fn) == nil
	}
	err := o.err
	o.err = nil
	epollOps.Put(o)
	return ok, err
}

// addLocked puts the socket in the epoll set. Called with mu held.
func (w *Waiter) addLocked() bool {
	if ok, err := w.ctl(unix.EPOLL_CTL_ADD); !ok || err != nil {
		return false
	}
	w.registered = true
	parked.Add(1)
	return true
}

// delLocked takes the socket out of the epoll set (a closed net.Conn's is
// out already). Called with mu held.
func (w *Waiter) delLocked() {
	if !w.registered {
		return
	}
	w.registered = false
	parked.Add(-1)
	w.ctl(unix.EPOLL_CTL_DEL)
}

// unwatchLocked takes the socket out of the epoll set and forgets the
// waiter. Called with mu held.
func (w *Waiter) unwatchLocked() {
	w.home().forget(w.id)
	w.delLocked()
}

func release(rc syscall.RawConn) (int, error) {
	o := epollOps.Get().(*epollOp)
	o.op, o.nfd = 0, -1
	cerr := rc.Control(o.fn)
	nfd, err := o.nfd, o.err
	o.err = nil
	epollOps.Put(o)
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, fmt.Errorf("poll: duplicate socket: %w", err)
	}
	return nfd, nil
}

func closeFD(fd int) { _ = unix.Close(fd) }

func reopen(fd int) (net.Conn, error) {
	// Blocking for a moment, so that os.NewFile does not register it with
	// Go's netpoller only for FileConn's duplicate to be registered again;
	// FileConn makes the (shared) file description non-blocking again.
	_ = unix.SetNonblock(fd, false)
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("poll: reopen socket: %w", err)
	}
	return nc, nil
}

// forget removes a waiter.
func (p *poller) forget(id uint32) {
	p.mu.Lock()
	delete(p.waiters, id)
	p.mu.Unlock()
}

func (p *poller) run() {
	events := make([]unix.EpollEvent, 128)
	// The epoll set is itself pollable. Waiting for it through Go's
	// netpoller, rather than blocking a thread in epoll_wait, keeps the P:
	// with GOMAXPROCS=1 a poller back in a blocking epoll_wait held the
	// only P until sysmon took it, and parked connections' wakes came late
	// (100-pair runs stalled for seconds).
	var rc syscall.RawConn
	if err := unix.SetNonblock(p.epfd, true); err == nil {
		if f := os.NewFile(uintptr(p.epfd), "starling-poll"); f != nil {
			rc, _ = f.SyscallConn()
			p.file = f // keeps the fd open (a finalizer would close it)
		}
	}
	for {
		var n int
		var err error
		if rc != nil {
			rerr := rc.Read(func(fd uintptr) bool {
				n, err = unix.EpollWait(int(fd), events, 0)
				// Nothing ready (n == 0): wait until the set reports
				// readable. An error, EINTR included, goes to the loop.
				return err != nil || n > 0
			})
			if rerr != nil {
				// The set could not be waited on through the netpoller
				// (not pollable here): block in epoll_wait from now on.
				rc = nil
				continue
			}
		} else {
			n, err = unix.EpollWait(p.epfd, events, -1)
		}
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			// Cannot happen with a valid epfd; a waiter then gets its
			// deadline or its close only.
			return
		}
		for i := range events[:n] {
			id := uint32(events[i].Fd)
			p.mu.Lock()
			w := p.waiters[id]
			p.mu.Unlock()
			if w != nil {
				w.Wake()
			}
		}
	}
}

const supported = true

// pending reports whether the socket has bytes (or an end of stream or an
// error) waiting to be read, without reading them.
func pending(rc syscall.RawConn) bool {
	p := peekers.Get().(*peeker)
	p.ready = true
	_ = rc.Control(p.fn)
	ready := p.ready
	peekers.Put(p)
	return ready
}

// peeker carries pending's result out of rc.Control: a closure made per
// call would be two allocations per park.
type peeker struct {
	ready bool
	fn    func(fd uintptr)
}

var peekers = sync.Pool{New: func() any {
	p := &peeker{}
	p.fn = func(fd uintptr) { p.ready = peek(fd) }
	return p
}}

func wait(rc syscall.RawConn) error {
	// Read calls the function, and again each time Go's netpoller reports
	// the socket readable, until it returns true or the deadline passes.
	// Only the first call peeks (input that came before the wait began
	// raised no new edge); after a wake-up the input is taken as there,
	// one system call less per wait. A wake-up without input only costs
	// the reader that follows one read that waits as Go's reads do.
	w := waiters.Get().(*waiter)
	w.woken = false
	err := rc.Read(w.fn)
	waiters.Put(w)
	return err
}

// waiter carries wait's state through rc.Read: a closure made per call
// would be an allocation per wait.
type waiter struct {
	woken bool
	fn    func(fd uintptr) bool
}

var waiters = sync.Pool{New: func() any {
	w := &waiter{}
	w.fn = func(fd uintptr) bool {
		if w.woken {
			return true
		}
		w.woken = true
		return peek(fd)
	}
	return w
}}

func ended(fd int) error {
	n, err := peekByte(fd)
	switch {
	case err == unix.EAGAIN || err == unix.EWOULDBLOCK || err == unix.EINTR || n > 0:
		return nil
	case err != nil:
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
	}
	return io.EOF
}

func peek(fd uintptr) bool {
	_, err := peekByte(int(fd))
	return err != unix.EAGAIN && err != unix.EWOULDBLOCK
}

// peekByte is recvfrom(fd, 1 byte, MSG_PEEK|MSG_DONTWAIT) without a source
// address: unix.Recvfrom allocates one (112 bytes) per call, a garbage
// object of every connection that parks, in the allocation class of the
// records idle connections keep.
func peekByte(fd int) (int, error) {
	var b [1]byte
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
