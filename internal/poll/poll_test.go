package poll

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close(); cc.Close() })
	return sc.(*net.TCPConn), cc.(*net.TCPConn)
}

func rawOf(t *testing.T, c *net.TCPConn) syscall.RawConn {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func parkOrSkip(t *testing.T, rc syscall.RawConn, deadline time.Time, fn func()) *Waiter {
	t.Helper()
	w, ok := Park(rc, deadline, Func(fn))
	if !ok {
		if runtime.GOOS != "linux" {
			t.Skip("no poller on " + runtime.GOOS)
		}
		t.Fatal("Park declined a live TCP socket")
	}
	return w
}

func waitCalled(t *testing.T, called chan struct{}, what string) {
	t.Helper()
	select {
	case <-called:
	case <-time.After(5 * time.Second):
		t.Fatalf("callback not run after %s", what)
	}
}

func TestParkWakesOnInput(t *testing.T) {
	s, c := pair(t)
	rc := rawOf(t, s)
	if Pending(rc) && runtime.GOOS == "linux" {
		t.Fatal("Pending with nothing sent")
	}
	called := make(chan struct{}, 2)
	parkOrSkip(t, rc, time.Time{}, func() { called <- struct{}{} })
	select {
	case <-called:
		t.Fatal("callback ran with nothing to read")
	case <-time.After(50 * time.Millisecond):
	}
	c.Write([]byte("x"))
	waitCalled(t, called, "input")
	if !Pending(rc) {
		t.Fatal("not Pending with a byte waiting")
	}
	b := make([]byte, 1)
	if n, err := s.Read(b); n != 1 || err != nil {
		t.Fatalf("read after wake: %d %v", n, err)
	}
	// Parked again with nothing waiting, then the peer hangs up.
	parkOrSkip(t, rc, time.Time{}, func() { called <- struct{}{} })
	c.Close()
	waitCalled(t, called, "hang-up")
	if len(called) != 0 {
		t.Fatal("callback ran twice")
	}
}

func TestParkDeadline(t *testing.T) {
	s, _ := pair(t)
	called := make(chan struct{}, 2)
	start := time.Now()
	parkOrSkip(t, rawOf(t, s), start.Add(100*time.Millisecond), func() { called <- struct{}{} })
	waitCalled(t, called, "deadline")
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("woken after %v, before the deadline", d)
	}
}

// The owner closes the socket (which leaves the epoll set silently) and
// wakes the waiter: the callback runs once, and a later Wake or the
// deadline does nothing.
func TestWakeAfterClose(t *testing.T) {
	s, _ := pair(t)
	rc := rawOf(t, s)
	called := make(chan struct{}, 3)
	before := Parked()
	w := parkOrSkip(t, rc, time.Now().Add(200*time.Millisecond), func() { called <- struct{}{} })
	if Parked() != before+1 {
		t.Fatalf("Parked %d, want %d", Parked(), before+1)
	}
	s.Close()
	w.Wake()
	waitCalled(t, called, "Wake")
	w.Wake()
	time.Sleep(300 * time.Millisecond) // past the deadline: its timer was stopped
	if len(called) != 0 {
		t.Fatal("callback ran more than once")
	}
	if Parked() != before {
		t.Fatalf("Parked %d, want %d", Parked(), before)
	}
	if _, ok := Park(rc, time.Time{}, Func(func() { called <- struct{}{} })); ok {
		t.Fatal("Park accepted a closed socket")
	}
}

// A callback that reads and parks the socket again at once, as a
// connection's reader does, must not lose its next wake-up to the end of
// the Park that woke it. Input is always waiting here, so every Park is
// woken at once, racing with its own return.
func TestReparkFromCallback(t *testing.T) {
	s, c := pair(t)
	rc := rawOf(t, s)
	const rounds = 3000
	c.Write(make([]byte, rounds))
	done := make(chan struct{})
	n := 0
	var resume func()
	resume = func() {
		b := make([]byte, 1)
		if _, err := s.Read(b); err != nil {
			t.Error(err)
			return
		}
		if n++; n == rounds {
			close(done)
			return
		}
		if _, ok := Park(rc, time.Now().Add(time.Minute), Func(resume)); !ok {
			t.Error("Park declined")
		}
	}
	parkOrSkip(t, rc, time.Now().Add(time.Minute), resume)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a wake-up was lost: input left unread")
	}
}

// Wait returns once input is waiting, without reading it, or with the
// deadline's error.
func TestWait(t *testing.T) {
	if !Supported() {
		t.Skip("no poller on " + runtime.GOOS)
	}
	s, c := pair(t)
	rc := rawOf(t, s)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := Wait(rc); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait with nothing sent: %v, want the deadline", err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	go func() { time.Sleep(20 * time.Millisecond); c.Write([]byte("ab")) }()
	if err := Wait(rc); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	b := make([]byte, 2)
	if n, err := io.ReadFull(s, b); n != 2 || string(b) != "ab" {
		t.Fatalf("read after Wait: %q %v", b[:n], err)
	}
	// Input that came before the wait began raises no new edge for the
	// netpoller: the first look finds it, at once and without allocating.
	if _, err := c.Write([]byte("c")); err != nil {
		t.Fatal(err)
	}
	for !Pending(rc) {
		runtime.Gosched()
	}
	s.SetReadDeadline(time.Now().Add(time.Hour))
	if n := testing.AllocsPerRun(20, func() {
		if err := Wait(rc); err != nil {
			t.Fatalf("Wait with input already there: %v", err)
		}
	}); n != 0 && !raceEnabled {
		t.Errorf("Wait allocates %v objects per call", n)
	}
}

// A Waiter is held by every parked connection: it stays in the 64-byte
// allocation class.
func TestWaiterSizeBudget(t *testing.T) {
	if size := unsafe.Sizeof(Waiter{}); size > 64 {
		t.Fatalf("Waiter is %d bytes, budget 64", size)
	}
}

// Pending peeks without allocating: every connection that parks calls it,
// and a garbage object per connection in the small allocation classes
// keeps spans of live idle records resident.
func TestPendingNoAllocation(t *testing.T) {
	if !Supported() {
		t.Skip("no poller on " + runtime.GOOS)
	}
	sc, cc := pair(t)
	rc := rawOf(t, sc)
	if Pending(rc) {
		t.Fatal("Pending with no input")
	}
	if n := testing.AllocsPerRun(100, func() { Pending(rc) }); n != 0 && !raceEnabled {
		t.Errorf("Pending allocates %v objects per call", n)
	}
	if _, err := cc.Write([]byte{0x10}); err != nil {
		t.Fatal(err)
	}
	for !Pending(rc) {
		if err := Wait(rc); err != nil {
			t.Fatalf("wait: %v", err)
		}
	}
	var b [1]byte
	if n, err := sc.Read(b[:]); n != 1 || b[0] != 0x10 {
		t.Fatalf("read after Pending: %d %v %x: the peek took the byte", n, err, b[0])
	}
}

// Releasing a socket and parking its descriptor makes the Waiter and
// nothing else: the closures its system calls were made in were garbage
// objects of every parking connection, in the small allocation classes
// idle records share.
func TestParkReleasedAllocations(t *testing.T) {
	if !Supported() {
		t.Skip("no poller on " + runtime.GOOS)
	}
	sc, _ := pair(t)
	rc := rawOf(t, sc)
	var ws []*Waiter
	n := testing.AllocsPerRun(100, func() {
		fd, err := Release(rc)
		if err != nil {
			t.Fatal(err)
		}
		w, ok := ParkFD(fd, time.Time{}, Func(func() {}))
		if !ok {
			t.Fatal("ParkFD declined")
		}
		w.Unwatch()
		CloseFD(fd)
		ws = append(ws, w) // outside the budget: grows by doubling
	})
	for _, w := range ws {
		w.Wake()
	}
	if n > 1 && !raceEnabled {
		t.Errorf("Release and ParkFD make %v allocations, budget 1 (the Waiter)", n)
	}
}
