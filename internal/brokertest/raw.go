package brokertest

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// maxPatience bounds Patience when the test has no deadline or a distant
// one, so a broken test still ends with its own message rather than the
// binary's timeout panic.
const maxPatience = 2 * time.Minute

// Patience is how long a helper waits for something that should happen
// soon (a write accepted, a packet answered, a connection closed). A fixed
// few seconds is missed by a slow -race run on a loaded machine, so it is
// the time left before the test binary's -timeout, less a margin to report
// the failure, and at most maxPatience. A passing test never waits it out.
func Patience(t testing.TB) time.Duration {
	d := maxPatience
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := dt.Deadline(); ok {
			left := time.Until(deadline)
			left -= min(left/2, 30*time.Second) // room to fail by name
			d = min(d, left)
		}
	}
	return max(d, time.Second)
}

// Raw is a packet-level MQTT client for error paths real clients never take.
type Raw struct {
	t       testing.TB
	nc      net.Conn
	br      *bufio.Reader
	Version byte
}

// Dial opens a raw connection speaking the given protocol level.
func Dial(t testing.TB, addr string, version byte) *Raw {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, Patience(t))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &Raw{t: t, nc: nc, br: bufio.NewReader(nc), Version: version}
}

// NewRaw is Dial over a connection the caller opened (WebSocket, TLS); it
// is closed at cleanup.
func NewRaw(t testing.TB, nc net.Conn, version byte) *Raw {
	t.Helper()
	t.Cleanup(func() { nc.Close() })
	return &Raw{t: t, nc: nc, br: bufio.NewReader(nc), Version: version}
}

// Close drops the connection without DISCONNECT (wills, unacknowledged
// messages, takeovers).
func (r *Raw) Close() { r.nc.Close() }

// Send encodes and writes packets.
func (r *Raw) Send(ps ...packet.Packet) {
	r.t.Helper()
	var buf []byte
	for _, p := range ps {
		var err error
		if buf, err = packet.Append(buf, p, r.Version); err != nil {
			r.t.Fatalf("encode %T: %v", p, err)
		}
	}
	r.WriteRaw(buf)
}

// WriteRaw writes bytes as they are, waiting up to Patience for the broker
// to take them: a broker that pushes back on a flooding publisher by not
// reading its socket legitimately holds a write for a while.
func (r *Raw) WriteRaw(b []byte) {
	r.t.Helper()
	r.nc.SetWriteDeadline(time.Now().Add(Patience(r.t)))
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// Connect sends CONNECT with the client ID and clean start, and returns the
// CONNACK.
func (r *Raw) Connect(clientID string, clean bool) *packet.Connack {
	r.t.Helper()
	name := "MQTT"
	if r.Version == packet.V31 {
		name = "MQIsdp"
	}
	r.Send(&packet.Connect{ProtocolName: name, ProtocolVersion: r.Version, CleanStart: clean, ClientID: clientID, KeepAlive: 30})
	ack, ok := r.Read().(*packet.Connack)
	if !ok {
		r.t.Fatalf("expected CONNACK")
	}
	return ack
}

// Next reads the next packet, or returns the error (io.EOF on close).
func (r *Raw) Next(timeout time.Duration) (packet.Packet, error) {
	r.nc.SetReadDeadline(time.Now().Add(timeout))
	fh, err := packet.ReadFixedHeader(r.br)
	if err != nil {
		return nil, err
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(r.br, body); err != nil {
		return nil, err
	}
	return packet.Decode(fh, body, r.Version)
}

// Read returns the next packet or fails the test after Patience.
func (r *Raw) Read() packet.Packet {
	r.t.Helper()
	p, err := r.Next(Patience(r.t))
	if err != nil {
		r.t.Fatalf("read packet: %v", err)
	}
	return p
}

// ExpectClosed asserts the broker closes the connection, optionally after a
// DISCONNECT with the given reason code (v5), and returns that DISCONNECT.
func (r *Raw) ExpectClosed(code packet.ReasonCode) *packet.Disconnect {
	r.t.Helper()
	var d *packet.Disconnect
	wait := Patience(r.t)
	for {
		p, err := r.Next(wait)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				r.t.Fatalf("connection not closed within %s", wait)
			}
			break
		}
		if dp, ok := p.(*packet.Disconnect); ok {
			d = dp
		}
	}
	if r.Version == packet.V5 {
		if d == nil {
			r.t.Fatalf("closed without DISCONNECT, want reason 0x%02x", byte(code))
		}
		if d.ReasonCode != code {
			r.t.Fatalf("DISCONNECT reason 0x%02x, want 0x%02x (%s)", byte(d.ReasonCode), byte(code), d.Properties.ReasonString)
		}
	}
	return d
}
