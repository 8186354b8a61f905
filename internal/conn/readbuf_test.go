package conn

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (srv, cli net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return srv, cli
}

// TestReadBufferGrowsForBusyConnection checks that a connection whose
// reads fill its buffer takes a larger one, so that a busy publisher's
// packets are drained many per system call, and that every packet, QoS 0
// ones decoded into the connection's reused value included, comes out
// whole.
func TestReadBufferGrowsForBusyConnection(t *testing.T) {
	srv, cli := tcpPair(t)
	c := New(srv, 1<<20)
	defer c.Close()
	c.SetVersion(packet.V311)
	const n = 400
	var burst []byte
	for i := range n {
		var err error
		if burst, err = packet.Append(burst, pubAt(i), packet.V311); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	if dl, ok := t.Deadline(); ok {
		deadline = dl
	}
	// In bursts of 100 packets, each read whole before the next is sent:
	// the buffer runs dry between them, when it may be replaced.
	const per = 100
	ends := []int{0}
	for i := 1; i <= n; i++ {
		b, _ := packet.Append(nil, pubAt(i-1), packet.V311)
		ends = append(ends, ends[i-1]+len(b))
	}
	for i := range n {
		if i%per == 0 {
			if _, err := cli.Write(burst[ends[i]:ends[i+per]]); err != nil {
				t.Fatal(err)
			}
		}
		p, _, err := c.ReadPacket(deadline)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		pub, ok := p.(*packet.Publish)
		if !ok || pub.Topic != fmt.Sprintf("t/%d", i%3) || string(pub.Payload) != fmt.Sprintf("message %05d of the burst", i) {
			t.Fatalf("packet %d: got %#v", i, p)
		}
	}
	if c.rsize == 0 {
		t.Fatalf("read buffer stayed at %d bytes for a %d-byte burst", readBufSizes[0], len(burst))
	}
}

// pubAt is the burst's packet i: QoS 0 but for every fifth, over three
// topics.
func pubAt(i int) *packet.Publish {
	p := &packet.Publish{Topic: fmt.Sprintf("t/%d", i%3), Payload: []byte(fmt.Sprintf("message %05d of the burst", i))}
	if i%5 == 4 {
		p.QoS, p.PacketID = 1, uint16(i)
	}
	return p
}
