package integration

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// A retained message whose expiry passed is not delivered to new
// subscribers; one without expiry is.
func TestV5MessageExpiryRetained(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub, _ := dialV5(t, addr, "mer-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "mer/short", QoS: 1, Retain: true, Payload: []byte("short"),
		Properties: &paho.PublishProperties{MessageExpiry: v5U32(1)}})
	pub.pub(t, &paho.Publish{Topic: "mer/keep", QoS: 1, Retain: true, Payload: []byte("keep")})
	time.Sleep(2 * time.Second)
	sub, _ := dialV5(t, addr, "mer-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "mer/#", QoS: 1})
	m := sub.expect(t)
	if m.Topic != "mer/keep" || !m.Retain {
		t.Fatalf("got %q retain %v, want the unexpired retained message", m.Topic, m.Retain)
	}
	if m.Properties != nil && m.Properties.MessageExpiry != nil {
		t.Fatalf("message without expiry delivered with Message Expiry %d", *m.Properties.MessageExpiry)
	}
	sub.expectNone(t, v5Quiet)
}

// Messages queued for an offline session expire there; the survivors carry
// their remaining lifetime.
func TestV5MessageExpiryQueued(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s, _ := v5Raw(t, addr, "meq", false, 60)
	v5RawSub(t, s, 1, 0, packet.Subscription{Filter: "meq/t", QoS: 1})
	s.Send(&packet.Disconnect{})
	v5WaitEOF(t, s)

	pub, _ := dialV5(t, addr, "meq-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "meq/t", QoS: 1, Payload: []byte("gone"),
		Properties: &paho.PublishProperties{MessageExpiry: v5U32(1)}})
	pub.pub(t, &paho.Publish{Topic: "meq/t", QoS: 1, Payload: []byte("stay")})
	pub.pub(t, &paho.Publish{Topic: "meq/t", QoS: 1, Payload: []byte("ten"),
		Properties: &paho.PublishProperties{MessageExpiry: v5U32(10)}})
	time.Sleep(2 * time.Second)

	s2, _ := v5Raw(t, addr, "meq", false, 60)
	p := v5ReadPub(t, s2, "meq/t", "stay")
	if p.Properties.MessageExpiry != nil {
		t.Fatalf("message without expiry got Message Expiry %d", *p.Properties.MessageExpiry)
	}
	s2.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	p = v5ReadPub(t, s2, "meq/t", "ten")
	if e := p.Properties.MessageExpiry; e == nil || *e > 9 || *e < 1 {
		t.Fatalf("Message Expiry %v after 2 s of 10, want 1..9 (the remaining time)", e)
	}
	s2.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	v5Silent(t, s2, v5Quiet)
}

// A delivered message carries a Message Expiry no greater than the original:
// the retained copy counts down, a live one is at most the original.
func TestV5MessageExpiryRemaining(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub, _ := dialV5(t, addr, "mex-pub", nil)
	live, _ := dialV5(t, addr, "mex-live", nil)
	live.sub(t, paho.SubscribeOptions{Topic: "mex/t", QoS: 1})
	pub.pub(t, &paho.Publish{Topic: "mex/t", QoS: 1, Retain: true, Payload: []byte("r"),
		Properties: &paho.PublishProperties{MessageExpiry: v5U32(30)}})
	m := live.expect(t)
	if m.Properties == nil || m.Properties.MessageExpiry == nil || *m.Properties.MessageExpiry > 30 || *m.Properties.MessageExpiry < 29 {
		t.Fatalf("live delivery Message Expiry %v, want 29..30", m.Properties)
	}
	time.Sleep(1200 * time.Millisecond)
	late, _ := dialV5(t, addr, "mex-late", nil)
	late.sub(t, paho.SubscribeOptions{Topic: "mex/t", QoS: 1})
	m = late.expect(t)
	if m.Properties == nil || m.Properties.MessageExpiry == nil {
		t.Fatalf("retained delivery has no Message Expiry")
	}
	if e := *m.Properties.MessageExpiry; e > 29 || e < 27 {
		t.Fatalf("retained delivery 1.2 s later: Message Expiry %d, want 27..29", e)
	}
}

// Request Response Information 1 gets Response Information in CONNACK.
func TestV5ResponseInformation(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	cp := &packet.Connect{ClientID: "ri", CleanStart: true}
	cp.Properties.RequestResponseInfo = v5Byte(1)
	_, ack := v5RawConnect(t, addr, cp)
	if ack.Properties.ResponseInfo == "" {
		t.Fatalf("Request Response Information 1: no Response Information")
	}
	cp = &packet.Connect{ClientID: "ri0", CleanStart: true}
	cp.Properties.RequestResponseInfo = v5Byte(0)
	_, ack = v5RawConnect(t, addr, cp)
	if ack.Properties.ResponseInfo != "" {
		t.Fatalf("Request Response Information 0: got Response Information %q", ack.Properties.ResponseInfo)
	}
	_, ack = v5Raw(t, addr, "ri-none", true, 0)
	if ack.Properties.ResponseInfo != "" {
		t.Fatalf("no request: got Response Information %q", ack.Properties.ResponseInfo)
	}
}

// Response topic and correlation data travel with the request, and a
// response published to the response topic reaches the requester.
func TestV5RequestResponse(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	req, _ := dialV5(t, addr, "requester", nil)
	req.sub(t, paho.SubscribeOptions{Topic: "rr/reply/requester", QoS: 1})
	resp, _ := dialV5(t, addr, "responder", nil)
	resp.sub(t, paho.SubscribeOptions{Topic: "rr/req", QoS: 1})
	corr := []byte{0, 1, 2, 0xff}
	req.pub(t, &paho.Publish{Topic: "rr/req", QoS: 1, Payload: []byte("ping"),
		Properties: &paho.PublishProperties{ResponseTopic: "rr/reply/requester", CorrelationData: corr}})
	m := resp.expect(t)
	if m.Properties == nil || m.Properties.ResponseTopic != "rr/reply/requester" || !bytes.Equal(m.Properties.CorrelationData, corr) {
		t.Fatalf("request properties %+v", m.Properties)
	}
	resp.pub(t, &paho.Publish{Topic: m.Properties.ResponseTopic, QoS: 1, Payload: []byte("pong"),
		Properties: &paho.PublishProperties{CorrelationData: m.Properties.CorrelationData}})
	r := req.expect(t)
	if string(r.Payload) != "pong" || r.Properties == nil || !bytes.Equal(r.Properties.CorrelationData, corr) {
		t.Fatalf("response %q %+v", r.Payload, r.Properties)
	}
}

// Request Problem Information 0: no Reason String or User Property on
// failed acks.
func TestV5RequestProblemInformationZero(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	cp := &packet.Connect{ClientID: "rpi", CleanStart: true}
	cp.Properties.RequestProblemInfo = v5Byte(0)
	r, _ := v5RawConnect(t, addr, cp)

	r.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 5})
	a := v5ReadAck(t, r, packet.PUBCOMP)
	if a.ReasonCode != packet.PacketIDNotFound || a.Properties.ReasonString != "" || len(a.Properties.UserProperties) > 0 {
		t.Fatalf("PUBCOMP 0x%02x reason string %q user %v", byte(a.ReasonCode), a.Properties.ReasonString, a.Properties.UserProperties)
	}
	sa := v5RawSub(t, r, 1, 0, packet.Subscription{Filter: "a/#/b", QoS: 1})
	if sa.ReasonCodes[0] != packet.TopicFilterInvalid || sa.Properties.ReasonString != "" || len(sa.Properties.UserProperties) > 0 {
		t.Fatalf("SUBACK %v reason string %q user %v", sa.ReasonCodes, sa.Properties.ReasonString, sa.Properties.UserProperties)
	}
	r.Send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"never/subscribed"}})
	ua := v5Read[*packet.Unsuback](t, r)
	if ua.ReasonCodes[0] != packet.NoSubscriptionExisted || ua.Properties.ReasonString != "" {
		t.Fatalf("UNSUBACK %v reason string %q", ua.ReasonCodes, ua.Properties.ReasonString)
	}
	p := &packet.Publish{QoS: 1, PacketID: 3, Topic: "rpi/t", Payload: []byte{0xff}}
	p.Properties.PayloadFormat = v5Byte(1)
	r.Send(p)
	a = v5ReadAck(t, r, packet.PUBACK)
	if a.ReasonCode != packet.PayloadFormatInvalid || a.Properties.ReasonString != "" || len(a.Properties.UserProperties) > 0 {
		t.Fatalf("PUBACK 0x%02x reason string %q", byte(a.ReasonCode), a.Properties.ReasonString)
	}
}

// User properties (order and duplicates kept), content type and payload
// format indicator are forwarded unchanged.
func TestV5MessagePropertiesForwarded(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "mp-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "mp/t", QoS: 1})
	raw, _ := v5Raw(t, addr, "mp-raw", true, 0)
	v5RawSub(t, raw, 1, 0, packet.Subscription{Filter: "mp/t", QoS: 1})
	pub, _ := dialV5(t, addr, "mp-pub", nil)
	user := paho.UserProperties{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "a", Value: "3"}}
	pub.pub(t, &paho.Publish{Topic: "mp/t", QoS: 1, Payload: []byte(`{"héllo":1}`),
		Properties: &paho.PublishProperties{User: user, ContentType: "application/json", PayloadFormat: v5Byte(1)}})

	m := sub.expect(t)
	if m.Properties == nil {
		t.Fatalf("no properties")
	}
	if !slices.Equal(m.Properties.User, user) {
		t.Fatalf("user properties %v, want %v", m.Properties.User, user)
	}
	if m.Properties.ContentType != "application/json" {
		t.Fatalf("content type %q", m.Properties.ContentType)
	}
	if f := m.Properties.PayloadFormat; f == nil || *f != 1 {
		t.Fatalf("payload format %v, want 1", f)
	}
	// The same on the wire, seen by a raw client.
	p := v5ReadPub(t, raw, "mp/t", `{"héllo":1}`)
	want := []packet.UserProperty{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "a", Value: "3"}}
	if !slices.Equal(p.Properties.UserProperties, want) || p.Properties.ContentType != "application/json" ||
		p.Properties.PayloadFormat == nil || *p.Properties.PayloadFormat != 1 {
		t.Fatalf("raw properties %+v", p.Properties)
	}

	// Payload format 0 (absent) is not invented.
	pub.pub(t, &paho.Publish{Topic: "mp/t", QoS: 1, Payload: []byte{0xff}})
	if m := sub.expect(t); m.Properties != nil && (m.Properties.PayloadFormat != nil || m.Properties.ContentType != "" || len(m.Properties.User) > 0) {
		t.Fatalf("plain message got properties %+v", m.Properties)
	}
}

// Payload format 1 with invalid UTF-8 at QoS 1: PUBACK 0x99, not delivered.
func TestV5PayloadFormatInvalid(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "pf-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "pf/t", QoS: 1})
	pub, _ := dialV5(t, addr, "pf-pub", nil)
	r, err := v5PubCtx(pub, &paho.Publish{Topic: "pf/t", QoS: 1, Payload: []byte{'o', 'k', 0xc3, 0x28},
		Properties: &paho.PublishProperties{PayloadFormat: v5Byte(1)}})
	if r == nil || r.ReasonCode != byte(packet.PayloadFormatInvalid) {
		t.Fatalf("PUBACK %+v (err %v), want reason 0x99", r, err)
	}
	sub.expectNone(t, v5Quiet)
	// The connection stays usable and valid UTF-8 passes.
	pub.pub(t, &paho.Publish{Topic: "pf/t", QoS: 1, Payload: []byte("ok ✓"),
		Properties: &paho.PublishProperties{PayloadFormat: v5Byte(1)}})
	if m := sub.expect(t); string(m.Payload) != "ok ✓" {
		t.Fatalf("got %q", m.Payload)
	}
}
