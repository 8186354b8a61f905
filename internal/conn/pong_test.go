package conn

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// heldGate opens when its test closes done.
type heldGate struct{ done chan struct{} }

func (g heldGate) Done() <-chan struct{} { return g.done }
func (heldGate) OK() bool                { return true }

// readType reads one packet's fixed header and body from r and returns its
// type.
func readType(t *testing.T, nc net.Conn, r *bufio.Reader) packet.Type {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(time.Minute))
	fh, err := packet.ReadFixedHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Discard(fh.Remaining); err != nil {
		t.Fatal(err)
	}
	return fh.Type
}

// A PINGRESP is written while an acknowledgement before it waits for its
// store commit: a client with a short keep-alive whose QoS 2 flow waits
// on a slow commit (a cluster's queue stream electing a leader) must not
// take the connection for dead. The held packet still goes out, after.
func TestPongOvertakesGatedPackets(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := New(srv, 1<<20)
	c.SetOwner(&testOwner{}) // before use: the writer reads it
	defer c.Close()
	c.SetVersion(packet.V5)
	r := bufio.NewReader(cli)

	g := heldGate{done: make(chan struct{})}
	c.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: 1})
	c.SendGated(g, &packet.Ack{Kind: packet.PUBREC, PacketID: 2})
	if got := readType(t, cli, r); got != packet.PUBACK {
		t.Fatalf("first packet %v, want PUBACK", got)
	}
	c.SendPong()
	if got := readType(t, cli, r); got != packet.PINGRESP {
		t.Fatalf("with the PUBREC held back, got %v, want PINGRESP", got)
	}
	// Another while the first wait goes on, and one queued behind it.
	c.SendPong()
	if got := readType(t, cli, r); got != packet.PINGRESP {
		t.Fatalf("second: got %v, want PINGRESP", got)
	}
	c.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: 3})
	close(g.done)
	for _, want := range []packet.Type{packet.PUBREC, packet.PUBACK} {
		if got := readType(t, cli, r); got != want {
			t.Fatalf("after the commit: got %v, want %v", got, want)
		}
	}
	// With nothing held back, a PINGRESP alone starts the writer.
	c.SendPong()
	if got := readType(t, cli, r); got != packet.PINGRESP {
		t.Fatalf("idle: got %v, want PINGRESP", got)
	}
}
