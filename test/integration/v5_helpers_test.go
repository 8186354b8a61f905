package integration

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// v5Conn is a packet-level MQTT 5 client like testutil.Raw, which it
// mirrors, plus Close: several tests need to drop the connection abruptly
// (unacknowledged messages, wills, $share hand-over).
type v5Conn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func v5Dial(t testing.TB, addr string) *v5Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &v5Conn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// Close drops the connection without DISCONNECT.
func (r *v5Conn) Close() { r.nc.Close() }

// Send encodes and writes packets.
func (r *v5Conn) Send(ps ...packet.Packet) {
	r.t.Helper()
	var buf []byte
	for _, p := range ps {
		var err error
		if buf, err = packet.Append(buf, p, packet.V5); err != nil {
			r.t.Fatalf("encode %T: %v", p, err)
		}
	}
	r.WriteRaw(buf)
}

// WriteRaw writes bytes as they are.
func (r *v5Conn) WriteRaw(b []byte) {
	r.t.Helper()
	r.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// Next reads the next packet, or returns the error (io.EOF on close).
func (r *v5Conn) Next(timeout time.Duration) (packet.Packet, error) {
	r.nc.SetReadDeadline(time.Now().Add(timeout))
	fh, err := packet.ReadFixedHeader(r.br)
	if err != nil {
		return nil, err
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(r.br, body); err != nil {
		return nil, err
	}
	return packet.Decode(fh, body, packet.V5)
}

// Read returns the next packet or fails the test within 5 s.
func (r *v5Conn) Read() packet.Packet {
	r.t.Helper()
	p, err := r.Next(5 * time.Second)
	if err != nil {
		r.t.Fatalf("read packet: %v", err)
	}
	return p
}

// ExpectClosed asserts the broker sends DISCONNECT with code and closes the
// connection within 5 s, and returns that DISCONNECT.
func (r *v5Conn) ExpectClosed(code packet.ReasonCode) *packet.Disconnect {
	r.t.Helper()
	var d *packet.Disconnect
	for {
		p, err := r.Next(5 * time.Second)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatalf("connection not closed within 5s")
			}
			break
		}
		if dp, ok := p.(*packet.Disconnect); ok {
			d = dp
		}
	}
	if d == nil {
		r.t.Fatalf("closed without DISCONNECT, want reason 0x%02x", byte(code))
	}
	if d.ReasonCode != code {
		r.t.Fatalf("DISCONNECT reason 0x%02x, want 0x%02x (%s)", byte(d.ReasonCode), byte(code), d.Properties.ReasonString)
	}
	return d
}

// Pointer helpers for optional MQTT 5 properties.
func v5U16(v uint16) *uint16 { return &v }
func v5U32(v uint32) *uint32 { return &v }
func v5Byte(v byte) *byte    { return &v }
func v5Int(v int) *int       { return &v }

// v5Quiet is how long a "nothing arrives" assertion waits.
const v5Quiet = 300 * time.Millisecond

// v5RawConnect dials a raw MQTT 5 connection and sends cp (protocol name
// and level are filled in), returning the CONNACK.
func v5RawConnect(t *testing.T, addr string, cp *packet.Connect) (*v5Conn, *packet.Connack) {
	t.Helper()
	r := v5Dial(t, addr)
	cp.ProtocolName = "MQTT"
	cp.ProtocolVersion = packet.V5
	r.Send(cp)
	return r, v5Read[*packet.Connack](t, r)
}

// v5Raw connects a raw MQTT 5 client with the client ID, clean start and
// session expiry (0 = absent), without keep alive, and fails unless the
// CONNACK is a success.
func v5Raw(t *testing.T, addr, id string, clean bool, expiry uint32) (*v5Conn, *packet.Connack) {
	t.Helper()
	cp := &packet.Connect{ClientID: id, CleanStart: clean}
	if expiry > 0 {
		cp.Properties.SessionExpiry = v5U32(expiry)
	}
	r, ack := v5RawConnect(t, addr, cp)
	if ack.ReasonCode != packet.Success {
		t.Fatalf("connect %q: CONNACK 0x%02x (%s)", id, byte(ack.ReasonCode), ack.Properties.ReasonString)
	}
	return r, ack
}

// v5Read reads the next packet and fails unless it is a T.
func v5Read[T packet.Packet](t *testing.T, r *v5Conn) T {
	t.Helper()
	p := r.Read()
	v, ok := p.(T)
	if !ok {
		var want T
		t.Fatalf("got %T %+v, want %T", p, p, want)
	}
	return v
}

// v5ReadAck reads the next packet and fails unless it is an ack of kind.
func v5ReadAck(t *testing.T, r *v5Conn, kind packet.Type) *packet.Ack {
	t.Helper()
	a := v5Read[*packet.Ack](t, r)
	if a.Kind != kind {
		t.Fatalf("got ack type %d, want %d", a.Kind, kind)
	}
	return a
}

// v5Silent asserts that nothing arrives on r for d.
func v5Silent(t *testing.T, r *v5Conn, d time.Duration) {
	t.Helper()
	p, err := r.Next(d)
	if err == nil {
		t.Fatalf("unexpected %T %+v", p, p)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("connection failed while expecting silence: %v", err)
	}
}

// v5RawSub subscribes and returns the SUBACK (subID 0 = none).
func v5RawSub(t *testing.T, r *v5Conn, pid uint16, subID int, subs ...packet.Subscription) *packet.Suback {
	t.Helper()
	s := &packet.Subscribe{PacketID: pid, Subscriptions: subs}
	if subID > 0 {
		s.Properties.SubscriptionIDs = []int{subID}
	}
	r.Send(s)
	sa := v5Read[*packet.Suback](t, r)
	if sa.PacketID != pid {
		t.Fatalf("SUBACK packet ID %d, want %d", sa.PacketID, pid)
	}
	return sa
}

// v5ReadPub reads the next packet and fails unless it is a PUBLISH on
// topic with payload.
func v5ReadPub(t *testing.T, r *v5Conn, topic, payload string) *packet.Publish {
	t.Helper()
	p := v5Read[*packet.Publish](t, r)
	if p.Topic != topic || string(p.Payload) != payload {
		t.Fatalf("got PUBLISH %q %q, want %q %q", p.Topic, p.Payload, topic, payload)
	}
	return p
}

// v5PubQoS1 publishes a QoS 1 message from a raw client and waits for PUBACK.
func v5PubQoS1(t *testing.T, r *v5Conn, pid uint16, topic, payload string) *packet.Ack {
	t.Helper()
	r.Send(&packet.Publish{QoS: 1, PacketID: pid, Topic: topic, Payload: []byte(payload)})
	a := v5ReadAck(t, r, packet.PUBACK)
	if a.PacketID != pid {
		t.Fatalf("PUBACK for %d, want %d", a.PacketID, pid)
	}
	return a
}
