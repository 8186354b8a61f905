package integration

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// v5Conn is the packet-level client speaking MQTT 5.
type v5Conn = testutil.Raw

func v5Dial(t testing.TB, addr string) *v5Conn {
	t.Helper()
	return testutil.Dial(t, addr, packet.V5)
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
