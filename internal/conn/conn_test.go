package conn

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
)

func TestReadBodyLargeInSteps(t *testing.T) {
	want := make([]byte, 300<<10+7)
	for i := range want {
		want[i] = byte(i * 7)
	}
	got, err := readBody(io.MultiReader(bytes.NewReader(want[:1000]), bytes.NewReader(want[1000:])), len(want))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("readBody: err %v, equal %v", err, bytes.Equal(got, want))
	}
	if _, err := readBody(bytes.NewReader(want[:100<<10]), len(want)); err == nil {
		t.Fatal("short body accepted")
	}
}

// TestReadBodyWholeUpToPoolMax: a body up to bufpool.Max (a QoS 1 PUBLISH
// of 64 KiB with its topic) is one allocation of its size, not a 64 KiB
// step grown (allocated, cleared and copied again) to fit.
func TestReadBodyWholeUpToPoolMax(t *testing.T) {
	want := make([]byte, 64<<10+20)
	for i := range want {
		want[i] = byte(i * 13)
	}
	r := bytes.NewReader(want)
	var got []byte
	allocs := testing.AllocsPerRun(20, func() {
		r.Reset(want)
		var err error
		if got, err = readBody(r, len(want)); err != nil {
			t.Fatal(err)
		}
	})
	if !bytes.Equal(got, want) {
		t.Fatal("body read wrong")
	}
	if allocs != 1 || cap(got) != len(want) {
		t.Fatalf("%v allocations, capacity %d for a body of %d, want 1 of its size", allocs, cap(got), len(want))
	}
}

func TestTooLargeRejectedBeforeBody(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := New(srv, 100)
	defer c.Close()
	go cli.Write([]byte{0x30, 0xff, 0xff, 0x3f}) // announces ~1 MiB, sends nothing more
	_, _, err := c.ReadPacket(time.Now().Add(5 * time.Second))
	if err != ErrTooLarge {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
}

// A client that sends but never reads is not read from once MaxPending
// replies wait for it; reading them lets it go on.
func TestReaderBackpressure(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := New(srv, 1<<20)
	defer c.Close()
	c.SetVersion(packet.V311)
	// The writer blocks on the pipe with the first batch; fill the queue.
	c.Send(&packet.Pingresp{})
	time.Sleep(20 * time.Millisecond)
	for i := 0; i < MaxPending; i++ {
		c.Send(&packet.Pingresp{})
	}
	ping, _ := packet.Append(nil, &packet.Pingreq{}, packet.V311)
	go cli.Write(ping)
	got := make(chan error, 1)
	go func() {
		_, _, err := c.ReadPacket(time.Time{})
		got <- err
	}()
	select {
	case <-got:
		t.Fatal("read a packet while the client had MaxPending replies unread")
	case <-time.After(100 * time.Millisecond):
	}
	go io.Copy(io.Discard, cli)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("read after drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader still blocked after the client read its replies")
	}
}

type doneGate struct{}

func (doneGate) Done() <-chan struct{} { c := make(chan struct{}); close(c); return c }
func (doneGate) OK() bool              { return true }

// QoS 0 publishes for a client that reads nothing are bounded, also when
// they wait behind a store commit (SendGated): past MaxPendingQoS0 the
// connection is Full (its publishers are to be held back), past HardLimit
// times it they are dropped and counted; under a drop policy, past
// MaxPendingQoS0.
func TestQoS0DroppedForSlowReader(t *testing.T) {
	for _, shed := range []int{ShedNone, ShedNewest, ShedOldest} {
		for _, gated := range []bool{false, true} {
			srv, cli := net.Pipe() // cli never reads: the writer blocks
			c := New(srv, 1<<20)
			c.SetVersion(packet.V311)
			c.SetShared(&Shared{Totals: &Totals{}})
			c.SetShed(shed)
			bound := MaxPendingQoS0
			if shed == ShedNone {
				bound *= HardLimit
			}
			sent := 0
			for ; !c.Full() && sent < 3*MaxPendingQoS0; sent++ {
				c.Send(&packet.Publish{Topic: "t", Payload: []byte("x")})
			}
			if !c.Full() || c.Dropped.Load() != 0 {
				t.Fatalf("shed %d: Full %v after %d sends, %d dropped; want Full before any drop", shed, c.Full(), sent, c.Dropped.Load())
			}
			n := 3 * bound
			for i := 0; i < n; i++ {
				p := &packet.Publish{Topic: "t", Payload: []byte("x")}
				if gated {
					c.SendGated(doneGate{}, p)
				} else {
					c.Send(p)
				}
			}
			// At most the batch the writer holds plus a full queue are kept.
			if d := c.Dropped.Load(); d < uint64(n+sent-2*bound) || d > uint64(n+sent-bound) {
				t.Errorf("shed %d gated %v: %d of %d dropped, want %d to %d", shed, gated, d, n+sent, n+sent-2*bound, n+sent-bound)
			}
			c.Close()
			cli.Close()
			<-c.Done()
			if q := c.sh.Totals.Queued.Load(); q != 0 {
				t.Errorf("shed %d gated %v: %d queued bytes counted after close", shed, gated, q)
			}
		}
	}
}

// A QoS 0 latest-value publish takes the place of the queued one of its
// topic; the writer writes the newest of each topic, in the order the
// topics were first queued.
func TestQoS0Conflation(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := New(srv, 1<<20)
	defer c.Close()
	c.SetVersion(packet.V311)
	var ps []packet.Packet
	for i := range 5 {
		for _, tp := range []string{"a", "b"} {
			m := &session.Message{Topic: tp, Payload: []byte{'0' + byte(i)}}
			ps = append(ps, &session.Outgoing{Msg: m, Latest: true})
		}
	}
	ps = append(ps, &packet.Publish{Topic: "a", Payload: []byte("z")})
	c.Send(ps...) // one call: the writer takes nothing before all are queued
	if c.Conflated.Load() != 8 {
		t.Fatalf("conflated %d, want 8", c.Conflated.Load())
	}
	want := [][]byte{}
	for _, p := range []*packet.Publish{{Topic: "a", Payload: []byte("4")}, {Topic: "b", Payload: []byte("4")}, {Topic: "a", Payload: []byte("z")}} {
		b, _ := packet.Append(nil, p, packet.V311)
		want = append(want, b)
	}
	all := bytes.Join(want, nil)
	got := make([]byte, len(all))
	if _, err := io.ReadFull(cli, got); err != nil || !bytes.Equal(got, all) {
		t.Fatalf("read %q (%v), want %q", got, err, all)
	}
}

// QoS 0 publishes for a client that does not read are bounded by their
// bytes too; the ones over MaxQueuedBytes are dropped and counted in both
// counters. A large batch is written in pieces, all of it arriving.
func TestQoS0QueuedBytesBound(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := New(srv, 1<<20)
	defer c.Close()
	c.SetVersion(packet.V311)
	sh := &Shared{Totals: &Totals{}, MaxQueuedBytes: 10 << 10}
	c.SetShared(sh)
	c.SetShed(ShedNewest)
	var ps []packet.Packet
	for range 100 {
		ps = append(ps, &packet.Publish{Topic: "t", Payload: make([]byte, 1024)})
	}
	c.Send(ps...) // one call: the writer takes nothing before all are queued
	// 9 fit: 9 × 1025 = 9225 bytes; a 10th would make 10250 > 10240.
	if d := c.Dropped.Load(); d != 91 || sh.Totals.Dropped.Load() != 91 {
		t.Fatalf("dropped %d (total %d), want 91", d, sh.Totals.Dropped.Load())
	}
	got, err := io.ReadAll(io.LimitReader(cli, 9*(1+2+3+1024)))
	if err != nil || len(got) != 9*(1+2+3+1024) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	// Emptied by the writer: room again; 100 KiB in one batch (above
	// flushChunk) arrives whole.
	c.mu.Lock()
	sh.MaxQueuedBytes = 0
	c.mu.Unlock()
	ps = ps[:0]
	for range 100 {
		ps = append(ps, &packet.Publish{Topic: "t", Payload: make([]byte, 1024)})
	}
	c.Send(ps...)
	got, err = io.ReadAll(io.LimitReader(cli, 100*(1+2+3+1024)))
	if err != nil || len(got) != 100*(1+2+3+1024) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
}
