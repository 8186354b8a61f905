package integration

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// v5WaitEOF waits until the broker has closed the raw connection after a
// client DISCONNECT (no server DISCONNECT expected).
func v5WaitEOF(t *testing.T, r *v5Conn) {
	t.Helper()
	for {
		p, err := r.Next(5 * time.Second)
		if err != nil {
			return
		}
		if d, ok := p.(*packet.Disconnect); ok {
			t.Fatalf("unexpected server DISCONNECT 0x%02x (%s)", byte(d.ReasonCode), d.Properties.ReasonString)
		}
	}
}

// A persistent session (clean start false, expiry > 0) keeps its
// subscriptions and queues QoS 1 messages while offline.
func TestV5SessionResumeKeepsSubscriptionsAndQueue(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s, ack := v5Raw(t, addr, "resume", false, 60)
	if ack.SessionPresent {
		t.Fatalf("first connect: session present")
	}
	if sa := v5RawSub(t, s, 1, 0, packet.Subscription{Filter: "sess/resume", QoS: 1}); sa.ReasonCodes[0] != packet.GrantedQoS1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	s.Send(&packet.Disconnect{})
	v5WaitEOF(t, s)

	pub, _ := dialV5(t, addr, "resume-pub", nil)
	// QoS 0 first: the PUBACKs that follow prove it was routed while offline.
	pub.pub(t, &paho.Publish{Topic: "sess/resume", QoS: 0, Payload: []byte("q0-dropped")})
	pub.pub(t, &paho.Publish{Topic: "sess/resume", QoS: 1, Payload: []byte("m1")})
	pub.pub(t, &paho.Publish{Topic: "sess/resume", QoS: 1, Payload: []byte("m2")})

	s2, ack := v5Raw(t, addr, "resume", false, 60)
	if !ack.SessionPresent {
		t.Fatalf("reconnect: session present false, want true")
	}
	for i, want := range []string{"m1", "m2"} {
		p := v5ReadPub(t, s2, "sess/resume", want)
		if p.QoS != 1 {
			t.Fatalf("queued message %d: QoS %d, want 1", i, p.QoS)
		}
		s2.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	// The QoS 0 message is not queued for an offline client.
	v5Silent(t, s2, v5Quiet)
	// The subscription is still there for live messages.
	pub.pub(t, &paho.Publish{Topic: "sess/resume", QoS: 1, Payload: []byte("m3")})
	p := v5ReadPub(t, s2, "sess/resume", "m3")
	if p.Dup {
		t.Fatalf("live message has DUP set")
	}
}

// [MQTT-3.14.2-2] expiry 0 at CONNECT, non-zero at DISCONNECT is a protocol
// error.
func TestV5SessionExpiryZeroThenNonZeroAtDisconnect(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s, _ := v5Raw(t, addr, "zero", true, 0)
	d := &packet.Disconnect{}
	d.Properties.SessionExpiry = v5U32(30)
	s.Send(d)
	s.ExpectClosed(packet.ProtocolError)
}

// A second connection with the same client ID takes the session over: the
// first gets DISCONNECT 0x8E, the second the session.
func TestV5SessionTakeover(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	a, _ := v5Raw(t, addr, "takeover", false, 60)
	v5RawSub(t, a, 1, 0, packet.Subscription{Filter: "sess/takeover", QoS: 1})

	b, ack := dialV5(t, addr, "takeover", &paho.Connect{KeepAlive: 30, CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: v5U32(60)}})
	if !ack.SessionPresent {
		t.Fatalf("takeover: session present false, want true")
	}
	a.ExpectClosed(packet.SessionTakenOver)

	pub, _ := dialV5(t, addr, "takeover-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "sess/takeover", QoS: 1, Payload: []byte("to-b")})
	if m := b.expect(t); string(m.Payload) != "to-b" {
		t.Fatalf("new connection got %q", m.Payload)
	}
}

// An empty client ID gets an Assigned Client Identifier, unique per client.
func TestV5AssignedClientID(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	_, a1 := dialV5(t, addr, "", nil)
	_, a2 := dialV5(t, addr, "", nil)
	id1, id2 := a1.Properties.AssignedClientID, a2.Properties.AssignedClientID
	if id1 == "" || id2 == "" || id1 == id2 {
		t.Fatalf("assigned client IDs %q and %q, want two distinct non-empty IDs", id1, id2)
	}
	_, a3 := dialV5(t, addr, "named", nil)
	if a3.Properties.AssignedClientID != "" {
		t.Fatalf("named client got an assigned ID %q", a3.Properties.AssignedClientID)
	}
}

// A silent client is cut off after 1.5 x keep alive with DISCONNECT 0x8D,
// and its will is published.
func TestV5KeepAliveTimeout(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "ka-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "ka/will", QoS: 1})

	start := time.Now()
	r, _ := v5RawConnect(t, addr, &packet.Connect{ClientID: "ka", CleanStart: true, KeepAlive: 1,
		Will: &packet.Will{Topic: "ka/will", Payload: []byte("timed out"), QoS: 1}})
	r.ExpectClosed(packet.KeepAliveTimeout)
	if el := time.Since(start); el < time.Second {
		t.Fatalf("cut off after %v, before the keep alive", el)
	}
	if m := sub.expect(t); m.Topic != "ka/will" || string(m.Payload) != "timed out" {
		t.Fatalf("will: got %q %q", m.Topic, m.Payload)
	}
}

// limits.max_keep_alive is announced as Server Keep Alive to clients asking
// for more (or for 0), and enforced.
func TestV5ServerKeepAlive(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxKeepAlive = 1 })
	for _, ka := range []uint16{60, 0} {
		r, ack := v5RawConnect(t, addr, &packet.Connect{ClientID: "ska", CleanStart: true, KeepAlive: ka})
		if ack.ReasonCode != packet.Success {
			t.Fatalf("CONNACK 0x%02x", byte(ack.ReasonCode))
		}
		if sk := ack.Properties.ServerKeepAlive; sk == nil || *sk != 1 {
			t.Fatalf("keep alive %d: Server Keep Alive %v, want 1", ka, sk)
		}
		// The announced keep alive is the one enforced.
		r.ExpectClosed(packet.KeepAliveTimeout)
	}
	_, ack := v5RawConnect(t, addr, &packet.Connect{ClientID: "ska-ok", CleanStart: true, KeepAlive: 1})
	if ack.Properties.ServerKeepAlive != nil {
		t.Fatalf("keep alive within the limit: Server Keep Alive %d announced", *ack.Properties.ServerKeepAlive)
	}

	// Without the limit nothing is announced.
	_, addr2 := testutil.StartBroker(t, nil)
	_, ack = v5RawConnect(t, addr2, &packet.Connect{ClientID: "ska", CleanStart: true, KeepAlive: 600})
	if ack.Properties.ServerKeepAlive != nil {
		t.Fatalf("no max_keep_alive: Server Keep Alive %d announced", *ack.Properties.ServerKeepAlive)
	}
}
