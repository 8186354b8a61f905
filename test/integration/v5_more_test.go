package integration

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// Clean start 1 discards an existing session [MQTT-3.1.2-4, 3.2.2-2].
func TestV5CleanStartDiscardsSession(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s, _ := v5Raw(t, addr, "cs", false, 60)
	v5RawSub(t, s, 1, 0, packet.Subscription{Filter: "cs/t", QoS: 1})
	s.Send(&packet.Disconnect{})
	v5WaitEOF(t, s)
	s2, ack := v5Raw(t, addr, "cs", true, 60)
	if ack.SessionPresent {
		t.Fatalf("clean start: session present true")
	}
	pub, _ := dialV5(t, addr, "cs-pub", nil)
	if r := pub.pub(t, &paho.Publish{Topic: "cs/t", QoS: 1, Payload: []byte("x")}); r.ReasonCode != byte(packet.NoMatchingSubscribers) {
		t.Fatalf("old subscription survived clean start: PUBACK 0x%02x", r.ReasonCode)
	}
	v5Silent(t, s2, v5Quiet)
}

// limits.max_session_expiry caps the requested interval and CONNACK says so.
func TestV5SessionExpiryCapped(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxSessionExpiry = 10 * time.Second })
	_, ack := v5Raw(t, addr, "cap", false, 3600)
	if e := ack.Properties.SessionExpiry; e == nil || *e != 10 {
		t.Fatalf("CONNACK Session Expiry %v, want 10", e)
	}
	_, ack = v5Raw(t, addr, "nocap", false, 5)
	if ack.Properties.SessionExpiry != nil {
		t.Fatalf("CONNACK Session Expiry %d for a request within the cap", *ack.Properties.SessionExpiry)
	}
}

// PINGREQ within the keep alive keeps the connection open: pings every
// 100 ms for twice the 1.5 s allowance of a 1 s keep alive.
func TestV5KeepAlivePingKeepsConnection(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	begun := time.Now()
	for attempt := 1; ; attempt++ {
		if pingedThrough(t, addr) {
			return
		}
		if time.Since(begun) > testutil.Patience(t) {
			t.Fatalf("%d attempts, each with a gap between pings of %v or more", attempt, keepAliveSlack)
		}
		t.Logf("attempt %d: a gap between pings reached %v (a starved run); again", attempt, keepAliveSlack)
	}
}

// keepAliveSlack is the longest gap between pings under which a close
// is the broker's fault: half the allowance of a 1 s keep alive. On a
// starved machine the test's own sleeps can overshoot by seconds, and
// the broker is then right to close.
const keepAliveSlack = 750 * time.Millisecond

// pingedThrough connects with keep alive 1 and pings for 3 s. It reports
// false if a gap reached keepAliveSlack first, and fails the test if the
// connection ended while every gap was shorter.
func pingedThrough(t *testing.T, addr string) bool {
	r, _ := v5RawConnect(t, addr, &packet.Connect{ClientID: "ping", CleanStart: true, KeepAlive: 1})
	defer r.Close()
	start := time.Now()
	last, widest := start, time.Duration(0)
	for time.Since(start) < 3*time.Second {
		time.Sleep(100 * time.Millisecond)
		widest = max(widest, time.Since(last))
		if widest >= keepAliveSlack {
			return false
		}
		r.Send(&packet.Pingreq{})
		last = time.Now()
		p, err := r.Next(testutil.Patience(t))
		if err != nil {
			if widest = max(widest, time.Since(last)); widest >= keepAliveSlack {
				return false
			}
			t.Fatalf("connection ended (%v) with every gap between pings under %v", err, keepAliveSlack)
		}
		if _, ok := p.(*packet.Pingresp); !ok {
			t.Fatalf("got %T, want PINGRESP", p)
		}
	}
	return true
}

// Takeover tells the old connection (0x8E) and publishes its will (no
// delay) [MQTT-3.1.4-3, 3.1.3-9]; that a delayed will is cancelled is
// internal/broker's TestLifetimeTakeover, on a fake clock.
func TestV5TakeoverAndWill(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub := v5WillSub(t, addr, "tw-sub", "tw/#")

	old := v5WillClient(t, addr, "tw-now", "tw/now", false, 0, 60)
	v5Raw(t, addr, "tw-now", false, 60)
	old.ExpectClosed(packet.SessionTakenOver)
	if m := sub.expect(t); m.Topic != "tw/now" {
		t.Fatalf("got %q, want the taken-over connection's will", m.Topic)
	}
}

// CONNECT refusals: a will with invalid UTF-8 and payload format 1 (0x99),
// an authentication method (0x8C).
func TestV5ConnectRefused(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	w := &packet.Will{Topic: "cr/w", Payload: []byte{0xff, 0xfe}}
	w.Properties.PayloadFormat = v5Byte(1)
	_, ack := v5RawConnect(t, addr, &packet.Connect{ClientID: "cr1", CleanStart: true, Will: w})
	if ack.ReasonCode != packet.PayloadFormatInvalid {
		t.Fatalf("invalid will payload: CONNACK 0x%02x, want 0x99", byte(ack.ReasonCode))
	}
	cp := &packet.Connect{ClientID: "cr2", CleanStart: true}
	cp.Properties.AuthMethod = "SCRAM-SHA-1"
	_, ack = v5RawConnect(t, addr, cp)
	if ack.ReasonCode != packet.BadAuthenticationMethod {
		t.Fatalf("auth method: CONNACK 0x%02x, want 0x8C", byte(ack.ReasonCode))
	}
}

// Subscription identifiers: on retained messages sent at subscribe, replaced
// by a new SUBSCRIBE of the same filter, removed when absent.
func TestV5SubscriptionIDLifecycle(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub, _ := dialV5(t, addr, "sid-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "sid/t", QoS: 1, Retain: true, Payload: []byte("ret")})
	r, _ := v5Raw(t, addr, "sid", true, 0)
	v5RawSub(t, r, 1, 7, packet.Subscription{Filter: "sid/t", QoS: 0})
	if p := v5ReadPub(t, r, "sid/t", "ret"); !slices.Equal(p.Properties.SubscriptionIDs, []int{7}) {
		t.Fatalf("retained: subscription identifiers %v, want [7]", p.Properties.SubscriptionIDs)
	}
	v5RawSub(t, r, 2, 9, packet.Subscription{Filter: "sid/t", QoS: 0, RetainHandling: 2})
	pub.pub(t, &paho.Publish{Topic: "sid/t", QoS: 0, Payload: []byte("a")})
	if p := v5ReadPub(t, r, "sid/t", "a"); !slices.Equal(p.Properties.SubscriptionIDs, []int{9}) {
		t.Fatalf("after re-subscribe: subscription identifiers %v, want [9]", p.Properties.SubscriptionIDs)
	}
	v5RawSub(t, r, 3, 0, packet.Subscription{Filter: "sid/t", QoS: 0, RetainHandling: 2})
	pub.pub(t, &paho.Publish{Topic: "sid/t", QoS: 0, Payload: []byte("b")})
	if p := v5ReadPub(t, r, "sid/t", "b"); len(p.Properties.SubscriptionIDs) != 0 {
		t.Fatalf("re-subscribe without identifier: got %v", p.Properties.SubscriptionIDs)
	}
}

// Retained messages are not sent to a new shared subscription, and a
// retained message at subscribe time is downgraded to the subscription QoS.
func TestV5RetainedSharedAndDowngrade(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub, _ := dialV5(t, addr, "rsd-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "rsd/t", QoS: 2, Retain: true, Payload: []byte("r")})
	r, _ := v5Raw(t, addr, "rsd", true, 0)
	v5RawSub(t, r, 1, 0, packet.Subscription{Filter: "$share/g/rsd/t", QoS: 2})
	v5Silent(t, r, v5Quiet)
	v5RawSub(t, r, 2, 0, packet.Subscription{Filter: "rsd/t", QoS: 0})
	if p := v5ReadPub(t, r, "rsd/t", "r"); p.QoS != 0 || !p.Retain {
		t.Fatalf("retained at subscribe: qos %d retain %v, want 0 true", p.QoS, p.Retain)
	}
}

// Outbound topic aliases are per connection: after a reconnect the topic is
// sent in full again.
func TestV5TopicAliasResetOnReconnect(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	connect := func() *v5Conn {
		cp := &packet.Connect{ClientID: "tar", CleanStart: false}
		cp.Properties.SessionExpiry = v5U32(60)
		cp.Properties.TopicAliasMaximum = v5U16(2)
		r, _ := v5RawConnect(t, addr, cp)
		return r
	}
	r := connect()
	v5RawSub(t, r, 1, 0, packet.Subscription{Filter: "tar/t", QoS: 0})
	pub, _ := dialV5(t, addr, "tar-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "tar/t", Payload: []byte("1")})
	v5ReadPub(t, r, "tar/t", "1")
	r.Send(&packet.Disconnect{})
	v5WaitEOF(t, r)
	r = connect()
	pub.pub(t, &paho.Publish{Topic: "tar/t", Payload: []byte("2")})
	if p := v5ReadPub(t, r, "tar/t", "2"); p.Properties.TopicAlias == nil {
		t.Fatalf("no alias set on the new connection")
	}
}
