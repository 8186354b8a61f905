package integration

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

func v3Proto31(o *mqtt.ClientOptions) { o.SetProtocolVersion(3) }

// MQTT 3.1 (protocol name MQIsdp, level 3) over the raw client: connect,
// subscribe, publish at each QoS, talking to a 3.1.1 client.
func TestV31RawConnectPublishSubscribe(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r := testutil.Dial(t, addr, packet.V31)
	ack := r.Connect("v31-raw", true)
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("3.1 CONNACK code 0x%02x present %v", byte(ack.ReasonCode), ack.SessionPresent)
	}
	v3RawSub(t, r, 1, "v31/raw/#", 2)

	other := v3Connect(t, addr, "v31-raw-peer", nil)
	other.sub("v31/from31", 2)
	for q := byte(0); q <= 2; q++ {
		other.pub("v31/raw/x", q, false, string('0'+q))
		p := v3RawExpectPublish(t, r, "v31/raw/x", string('0'+q), q)
		switch q {
		case 1:
			r.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
		case 2:
			r.Send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
			if a, ok := r.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREL {
				t.Fatalf("want PUBREL, got %#v", a)
			}
			r.Send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
		}
	}
	r.Send(&packet.Publish{Topic: "v31/from31", QoS: 1, PacketID: 5, Payload: []byte("hello from 3.1")})
	if a, ok := r.Read().(*packet.Ack); !ok || a.Kind != packet.PUBACK || a.PacketID != 5 {
		t.Fatalf("want PUBACK 5, got %#v", a)
	}
	other.expectMsg("v31/from31", "hello from 3.1", 1, false)
}

// A 3.1 client with clean session false keeps its session, but 3.1 CONNACK
// has no session present flag: it must stay 0.
func TestV31PersistentSessionNoSessionPresentFlag(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r := v3RawConnect(t, addr, packet.V31, "v31-persist", false)
	v3RawSub(t, r, 1, "v31p/t", 1)
	r.Send(&packet.Disconnect{})
	r.ExpectClosed(0)
	pub := v3Connect(t, addr, "v31-persist-pub", nil)
	pub.pub("v31p/t", 1, false, "kept")

	r2 := testutil.Dial(t, addr, packet.V31)
	ack := r2.Connect("v31-persist", false)
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("3.1 reconnect: code 0x%02x session present %v, want 0 false", byte(ack.ReasonCode), ack.SessionPresent)
	}
	v3RawExpectPublish(t, r2, "v31p/t", "kept", 1)
}

// MQTT 3.1 requires a client identifier: an empty one gets return code 0x02
// even with clean session.
func TestV31EmptyClientIDRejected(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r := testutil.Dial(t, addr, packet.V31)
	if ack := r.Connect("", true); ack.ReasonCode != packet.V3IdentifierRejected {
		t.Fatalf("3.1 empty client ID: code 0x%02x, want 0x02", byte(ack.ReasonCode))
	}
	r.ExpectClosed(0)
}

// paho speaking MQTT 3.1 (SetProtocolVersion(3)) with a 3.1.1 peer, both
// directions, with QoS downgrade, a retained message and a will.
func TestV31Paho(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	c31 := v3Connect(t, addr, "v31-paho", v3Proto31)
	c31.sub("v31p/in/#", 1)
	c311 := v3Connect(t, addr, "v31-paho-311", nil)
	c311.sub("v31p/out", 2)

	c311.pub("v31p/in/a", 2, false, "to 3.1")
	c31.expectMsg("v31p/in/a", "to 3.1", 1, false)
	c311.pub("v31p/in/b", 0, false, "qos0")
	c31.expectMsg("v31p/in/b", "qos0", 0, false)
	for q := byte(0); q <= 2; q++ {
		c31.pub("v31p/out", q, false, "from 3.1")
		c311.expectMsg("v31p/out", "from 3.1", q, false)
	}

	c311.pub("v31p/in/ret", 1, true, "retained")
	c31.expectMsg("v31p/in/ret", "retained", 1, false)
	late := v3Connect(t, addr, "v31-paho-late", v3Proto31)
	late.sub("v31p/in/ret", 2)
	late.expectMsg("v31p/in/ret", "retained", 1, true)

	w := v3Connect(t, addr, "v31-paho-will", func(o *mqtt.ClientOptions) {
		v3Proto31(o)
		o.SetWill("v31p/out", "3.1 will", 1, false)
	})
	w.kill()
	c311.expectMsg("v31p/out", "3.1 will", 1, false)
	c311.expectNone(100 * time.Millisecond)
}

// An unknown protocol level below 5 gets CONNACK return code 0x01 and the
// connection is closed [MQTT-3.1.2-2]; so does MQIsdp at level 4. (Levels
// above 5 get the MQTT 5 answer: TestV5NewerProtocolLevel.)
func TestV3UnacceptableProtocolLevel(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	for _, tc := range []struct {
		name  string
		level byte
	}{{"MQTT", 3}, {"MQIsdp", 4}, {"MQTT", 0}, {"MQIsdp", 6}} {
		r := v3Raw(t, addr)
		// Hand-encoded 3.1.1-shaped CONNECT: the codec refuses to encode an
		// unknown level.
		body := []byte{0, byte(len(tc.name))}
		body = append(body, tc.name...)
		body = append(body, tc.level, 0x02, 0, 30, 0, 4, 'v', '3', 'p', 'l')
		r.WriteRaw(append([]byte{0x10, byte(len(body))}, body...))
		p, err := r.Next(v3Wait)
		if err != nil {
			t.Fatalf("%s level %d: no CONNACK: %v", tc.name, tc.level, err)
		}
		ack, ok := p.(*packet.Connack)
		if !ok || ack.ReasonCode != packet.V3UnacceptableVersion || ack.SessionPresent {
			t.Fatalf("%s level %d: got %#v, want CONNACK 0x01", tc.name, tc.level, p)
		}
		r.ExpectClosed(0)
	}
}

// A protocol level newer than 5 gets the MQTT 5 answer, CONNACK 0x84
// (unsupported protocol version) in the 5.0 form (20 03 00 84 00), and the
// connection is closed (MQTT 5.0 section 3.1.2.2).
func TestV5NewerProtocolLevel(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	for _, level := range []byte{6, 7, 255} {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		body := append([]byte{0, 4, 'M', 'Q', 'T', 'T'}, level, 0x02, 0, 30, 0, 0, 4, 'v', '6', 'p', 'l')
		nc.Write(append([]byte{0x10, byte(len(body))}, body...))
		nc.SetReadDeadline(time.Now().Add(time.Minute))
		got, err := io.ReadAll(nc) // up to the close
		nc.Close()
		if want := []byte{0x20, 0x03, 0x00, 0x84, 0x00}; !bytes.Equal(got, want) {
			t.Fatalf("level %d: got % x (%v), want % x then the close", level, got, err, want)
		}
	}
}

// paho with clean session false over 3.1: the session and its offline
// messages survive a reconnect.
func TestV31PahoPersistentSession(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	persist31 := func(o *mqtt.ClientOptions) { v3Proto31(o); v3Persistent(o) }
	c := v3Connect(t, addr, "v31-pp", persist31)
	c.sub("v31pp/t", 2)
	c.Disconnect(250)
	pub := v3Connect(t, addr, "v31-pp-pub", nil)
	pub.pub("v31pp/t", 2, false, "offline")
	c2 := v3Connect(t, addr, "v31-pp", persist31)
	c2.expectMsg("v31pp/t", "offline", 2, false)
}
