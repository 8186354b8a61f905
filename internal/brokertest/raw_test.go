package brokertest

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// deadlineConn records the deadlines Raw sets on its connection.
type deadlineConn struct {
	net.Conn
	read, write time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.read = t
	return c.Conn.SetReadDeadline(t)
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.write = t
	return c.Conn.SetWriteDeadline(t)
}

// A slow -race run on a loaded machine missed the old fixed 5 s write
// deadline while the broker pushed back on a flooding publisher; Raw's
// waits now follow the test's own deadline.
func TestRawWaitsFollowTheTestDeadline(t *testing.T) {
	p := Patience(t)
	if deadline, ok := t.Deadline(); ok {
		if time.Until(deadline) > 2*time.Minute && p < time.Minute {
			t.Fatalf("Patience = %s with %s left before the test deadline; want at least a minute", p, time.Until(deadline))
		}
		if !time.Now().Add(p).Before(deadline) {
			t.Fatalf("Patience = %s runs past the test deadline %s", p, deadline)
		}
	} else if p != maxPatience {
		t.Fatalf("Patience = %s without a test deadline, want %s", p, maxPatience)
	}

	client, server := net.Pipe()
	dc := &deadlineConn{Conn: client}
	r := NewRaw(t, dc, packet.V5)
	t.Cleanup(func() { server.Close() })
	go func() {
		b := make([]byte, 2)
		io.ReadFull(server, b)        // the PINGREQ
		server.Write([]byte{0xd0, 0}) // PINGRESP
	}()
	start := time.Now()
	r.Send(&packet.Pingreq{})
	if _, ok := r.Read().(*packet.Pingresp); !ok {
		t.Fatal("want PINGRESP")
	}
	want := start.Add(p - time.Second)
	if dc.write.Before(want) {
		t.Errorf("write deadline %s after the write began, want about %s", dc.write.Sub(start), p)
	}
	if dc.read.Before(want) {
		t.Errorf("read deadline %s after the read began, want about %s", dc.read.Sub(start), p)
	}
}
