package conn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/poll"
)

// parkedPair returns a Conn on the server end of a loopback TCP connection
// and the client end.
func parkedPair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("idle poll is Linux only")
	}
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
	c := New(sc, 1<<20)
	c.SetVersion(packet.V311)
	c.SetOwner(&testOwner{}) // before use: the writer reads it
	t.Cleanup(func() { c.Close(); cc.Close() })
	return c, cc.(*net.TCPConn)
}

// released reports whether c is parked with its socket held as a bare
// descriptor.
func released(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, placeholder := c.nc.(releasedSocket)
	return c.released && placeholder
}

// parkReleased parks c and fails unless its socket was released; woken
// receives once resume runs.
func parkReleased(t *testing.T, c *Conn, deadline time.Time) chan struct{} {
	t.Helper()
	woken := make(chan struct{}, 1)
	if !c.parkTest(deadline, 0, func() { woken <- struct{}{} }) {
		t.Fatal("Park declined an idle TCP connection")
	}
	// A writer still finishing (an earlier delivery) releases it when done.
	waitUntil(t, "the socket released (parked with its net.TCPConn)", func() bool { return released(c) })
	return woken
}

func waitWoken(t *testing.T, woken chan struct{}, after string) {
	t.Helper()
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatalf("not woken after %s", after)
	}
}

func sendRaw(t *testing.T, cc net.Conn, p packet.Packet) {
	t.Helper()
	b, _ := packet.Append(nil, p, packet.V311)
	if _, err := cc.Write(b); err != nil {
		t.Fatal(err)
	}
}

func expectRaw(t *testing.T, cc net.Conn, p packet.Packet) {
	t.Helper()
	want, _ := packet.Append(nil, p, packet.V311)
	got := make([]byte, len(want))
	cc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(cc, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("client read %x, %v; want %x", got, err, want)
	}
}

// An idle parked connection holds its socket as a bare descriptor, and is
// served as before: input wakes it with a net.TCPConn to read from, a
// delivery while it is parked is written and leaves it parked, and it parks
// released again once it has been quiet ReleaseAfter.
func TestParkReleasesSocket(t *testing.T) {
	c, cc := parkedPair(t)
	woken := parkReleased(t, c, time.Time{})

	// A delivery while parked: written, and the reader stays parked, now
	// with its socket open (more deliveries may follow) until it parks
	// again.
	c.Send(&packet.Pingresp{})
	expectRaw(t, cc, &packet.Pingresp{})
	waitUntil(t, "the writer to stop", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.writing
	})
	if released(c) {
		t.Fatal("released again after a delivery")
	}
	select {
	case <-woken:
		t.Fatal("a write woke the parked reader")
	default:
	}

	sendRaw(t, cc, &packet.Pingreq{})
	waitWoken(t, woken, "input")
	if _, ok := c.NetConn().(*net.TCPConn); !ok {
		t.Fatalf("woken with %T, want the socket reopened as *net.TCPConn", c.NetConn())
	}
	p, _, err := c.ReadPacket(time.Now().Add(10 * time.Second))
	if _, ok := p.(*packet.Pingreq); !ok || err != nil {
		t.Fatalf("read %v, %v after wake-up; want PINGREQ", p, err)
	}

	// Woken at once by input: the next park keeps the net.TCPConn (a
	// client this active would pay a reopening per packet)...
	woken = make(chan struct{}, 1)
	if !c.parkTest(time.Time{}, 0, func() { woken <- struct{}{} }) {
		t.Fatal("Park declined")
	}
	if released(c) {
		t.Fatal("released the socket of a connection woken within ReleaseAfter")
	}
	// ...until input wakes it after ReleaseAfter parked (as if it had
	// waited that long).
	c.mu.Lock()
	c.parkedAt -= int64(2 * ReleaseAfter)
	c.mu.Unlock()
	sendRaw(t, cc, &packet.Pingreq{})
	waitWoken(t, woken, "input")
	if p, _, err := c.ReadPacket(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatalf("read %v, %v after the second wake-up", p, err)
	}
	woken = parkReleased(t, c, time.Time{})
	sendRaw(t, cc, &packet.Pingreq{})
	waitWoken(t, woken, "input")
	if p, _, err := c.ReadPacket(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatalf("read %v, %v after the third wake-up", p, err)
	}
}

// The deadline of a connection parked released still wakes it, and its
// read then times out (keep alive).
func TestParkReleasedDeadline(t *testing.T) {
	c, _ := parkedPair(t)
	deadline := time.Now().Add(100 * time.Millisecond)
	woken := parkReleased(t, c, deadline)
	waitWoken(t, woken, "the deadline")
	if time.Now().Before(deadline) {
		t.Fatal("woken before the deadline")
	}
	_, _, err := c.ReadPacket(deadline)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline: %v, want a timeout", err)
	}
}

// Closing a connection parked released closes the socket (the client sees
// the end of the stream, after what was queued for it) and wakes the
// reader, whose read fails.
func TestParkReleasedClose(t *testing.T) {
	c, cc := parkedPair(t)
	woken := parkReleased(t, c, time.Time{})
	c.CloseAfter(&packet.Pingresp{})
	expectRaw(t, cc, &packet.Pingresp{})
	if n, err := cc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read %d, %v after close; want EOF", n, err)
	}
	waitWoken(t, woken, "close")
	if _, _, err := c.ReadPacket(time.Time{}); err == nil {
		t.Fatal("read succeeded after close")
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
	if poll.Parked() < 0 {
		t.Fatal("poller count below zero")
	}
}

// A connection that parks while its writer runs keeps its net.TCPConn until
// the writer is done, and then releases it.
func TestParkReleasedAfterWriter(t *testing.T) {
	c, cc := parkedPair(t)
	c.mu.Lock()
	c.writing = true // as while a CONNACK is being written
	c.mu.Unlock()
	woken := make(chan struct{}, 1)
	// A grace: a park right after CONNECT (grace 0) waits for the writer.
	if !c.parkTest(time.Time{}, time.Millisecond, func() { woken <- struct{}{} }) {
		t.Fatal("Park declined")
	}
	if released(c) {
		t.Fatal("released the socket under a running writer")
	}
	c.mu.Lock()
	c.writing = false
	c.releaseParkedLocked() // what the writer does when it stops
	c.mu.Unlock()
	if !released(c) {
		t.Fatal("not released once the writer stopped")
	}
	sendRaw(t, cc, &packet.Pingreq{})
	waitWoken(t, woken, "input")
	if p, _, err := c.ReadPacket(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatalf("read %v, %v", p, err)
	}
}

// Every connection, idle ones included, holds what New allocates: the
// Conn in its 224-byte class (it was 320, until the spare slice moved to
// the writer's pooled storage, the per-broker settings behind one
// pointer, the counters to narrower fields, what only the end uses behind
// a pointer made then, and the first byte of a packet to a byte and a
// flag) and its writer function. Above 208: the 208 class has garbage of
// every connect. The stop and done
// channels and the sync.Cond are made only when something waits on them.
func TestNewAllocationBudget(t *testing.T) {
	if size := unsafe.Sizeof(Conn{}); size > 224 || size <= 208 {
		t.Fatalf("Conn is %d bytes, budget 209-224", size)
	}
	var nc net.Conn = releasedSocket{}
	if n := testing.AllocsPerRun(100, func() { New(nc, 1<<20) }); n > 2 {
		t.Fatalf("New makes %v allocations, budget 2", n)
	}
	c := New(nc, 1<<20)
	c.Close()
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	select {
	case <-c.stopped():
	default:
		t.Fatal("stop not closed after Close")
	}
}

// A park right after CONNECT (grace 0) waits for the writer sending the
// CONNACK and parks released at once, without watching the socket twice.
func TestParkAfterConnectWaitsForWriter(t *testing.T) {
	c, cc := parkedPair(t)
	c.Send(&packet.Connack{})
	woken := make(chan struct{}, 1)
	if !c.parkTest(time.Time{}, 0, func() { woken <- struct{}{} }) {
		t.Fatal("Park declined")
	}
	if !released(c) {
		t.Fatal("parked with its net.TCPConn after waiting for the writer")
	}
	c.mu.Lock()
	kept := c.drained != nil
	c.mu.Unlock()
	if kept {
		t.Fatal("parked holding the sync.Cond it waited for the writer with")
	}
	expectRaw(t, cc, &packet.Connack{})
	sendRaw(t, cc, &packet.Pingreq{})
	waitWoken(t, woken, "input")
}

// A client that goes away while its connection is parked released wakes
// the reader, which reads the end as from the socket (EOF, or the reset)
// without a net.Conn made only for that; what is written then is dropped.
func TestParkReleasedClientGone(t *testing.T) {
	for _, reset := range []bool{false, true} {
		c, cc := parkedPair(t)
		woken := parkReleased(t, c, time.Time{})
		if reset {
			cc.SetLinger(0) // close sends a reset
		}
		cc.Close()
		waitWoken(t, woken, "the client's close")
		if _, ok := c.NetConn().(*net.TCPConn); ok {
			t.Fatal("reopened the socket of a client that had gone")
		}
		_, _, err := c.ReadPacket(time.Time{})
		if reset {
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("read after a reset: %v, want the reset", err)
			}
		} else if !errors.Is(err, io.EOF) {
			t.Fatalf("read after the client closed: %v, want EOF", err)
		}
		c.CloseAfter(&packet.Pingresp{})
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("Done not closed")
		}
		if err := c.WriteErr(); err != nil {
			t.Fatalf("write error %v after the client had gone", err)
		}
	}
}

// A park right after CONNECT whose writer does not stop soon (a backlog
// for a client that does not read) does not wait for it: the reader parks,
// with its net.TCPConn until the writer stops, and input still wakes it.
func TestParkAfterConnectBusyWriter(t *testing.T) {
	c, cc := parkedPair(t)
	c.mu.Lock()
	c.writing = true // a writer that does not stop
	c.mu.Unlock()
	woken := make(chan struct{}, 1)
	if !c.parkTest(time.Time{}, 0, func() { woken <- struct{}{} }) {
		t.Fatal("Park declined")
	}
	if released(c) {
		t.Fatal("released the socket under a running writer")
	}
	sendRaw(t, cc, &packet.Pingreq{})
	waitWoken(t, woken, "input")
	c.mu.Lock()
	c.writing = false
	c.mu.Unlock()
}

// waitUntil polls cond until it holds, failing the test when its deadline
// is near (a test with none waits up to a minute).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	if dl, ok := t.Deadline(); ok {
		deadline = dl.Add(-5 * time.Second)
	}
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// testOwner is a connection's owner in tests, set before use (the
// writer reads it): resume, set by each park, runs on wake-up.
type testOwner struct{ resume atomic.Pointer[func()] }

func (o *testOwner) Resume() {
	if f := o.resume.Load(); f != nil {
		(*f)()
	}
}
func (o *testOwner) Took(int) {}

// parkTest parks c with its test owner's Resume calling resume.
func (c *Conn) parkTest(deadline time.Time, grace time.Duration, resume func()) bool {
	o, ok := c.owner.(*testOwner)
	if !ok {
		o = &testOwner{}
		c.SetOwner(o)
	}
	o.resume.Store(&resume)
	return c.Park(deadline, grace)
}
