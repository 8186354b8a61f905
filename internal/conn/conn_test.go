package conn

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
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

// QoS 0 publishes for a client that reads nothing are bounded by
// MaxPendingQoS0 and the rest dropped and counted, also when they wait
// behind a store commit (SendGated).
func TestQoS0DroppedForSlowReader(t *testing.T) {
	for _, gated := range []bool{false, true} {
		srv, cli := net.Pipe() // cli never reads: the writer blocks
		c := New(srv, 1<<20)
		c.SetVersion(packet.V311)
		const n = 3 * MaxPendingQoS0
		for i := 0; i < n; i++ {
			p := &packet.Publish{Topic: "t", Payload: []byte("x")}
			if gated {
				c.SendGated(doneGate{}, p)
			} else {
				c.Send(p)
			}
		}
		// At most the batch the writer holds plus a full queue are kept.
		if d := c.Dropped.Load(); d < n-2*MaxPendingQoS0 {
			t.Errorf("gated %v: %d of %d dropped, want at least %d", gated, d, n, n-2*MaxPendingQoS0)
		}
		c.Close()
		cli.Close()
	}
}
