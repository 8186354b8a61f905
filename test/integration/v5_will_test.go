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

// v5WillClient connects a raw client with a will on topic; delay and expiry
// of 0 are left out.
func v5WillClient(t *testing.T, addr, id, topic string, clean bool, delay, expiry uint32) *v5Conn {
	t.Helper()
	w := &packet.Will{Topic: topic, Payload: []byte("will of " + id), QoS: 1}
	if delay > 0 {
		w.Properties.WillDelay = v5U32(delay)
	}
	cp := &packet.Connect{ClientID: id, CleanStart: clean, Will: w}
	if expiry > 0 {
		cp.Properties.SessionExpiry = v5U32(expiry)
	}
	r, ack := v5RawConnect(t, addr, cp)
	if ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02x", byte(ack.ReasonCode))
	}
	return r
}

func v5WillSub(t *testing.T, addr, id, topic string) *v5Client {
	t.Helper()
	s, _ := dialV5(t, addr, id, nil)
	s.sub(t, paho.SubscribeOptions{Topic: topic, QoS: 1})
	return s
}

func TestV5WillOnAbnormalClose(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub := v5WillSub(t, addr, "wa-sub", "will/abn")
	r := v5WillClient(t, addr, "wa", "will/abn", true, 0, 0)
	r.Close()
	if m := sub.expect(t); m.Topic != "will/abn" || string(m.Payload) != "will of wa" || m.QoS != 1 {
		t.Fatalf("will: %q %q qos %d", m.Topic, m.Payload, m.QoS)
	}
}

func TestV5WillNotOnNormalDisconnect(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub := v5WillSub(t, addr, "wn-sub", "will/norm")
	r := v5WillClient(t, addr, "wn", "will/norm", true, 0, 0)
	r.Send(&packet.Disconnect{ReasonCode: packet.Success})
	v5WaitEOF(t, r)
	sub.expectNone(t, 500*time.Millisecond)
}

func TestV5WillOnDisconnectWithWill(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub := v5WillSub(t, addr, "w4-sub", "will/04")
	r := v5WillClient(t, addr, "w4", "will/04", true, 0, 0)
	r.Send(&packet.Disconnect{ReasonCode: packet.DisconnectWithWill})
	v5WaitEOF(t, r)
	if m := sub.expect(t); string(m.Payload) != "will of w4" {
		t.Fatalf("will: %q", m.Payload)
	}
}

// The will's retain flag, QoS and properties are those of the published
// message.
func TestV5WillRetainQoSAndProperties(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	live, _ := dialV5(t, addr, "wp-live", nil)
	live.sub(t, paho.SubscribeOptions{Topic: "will/props", QoS: 2, RetainAsPublished: true})

	w := &packet.Will{Topic: "will/props", Payload: []byte("héllo"), QoS: 1, Retain: true}
	w.Properties.UserProperties = []packet.UserProperty{{Key: "k", Value: "1"}, {Key: "k", Value: "2"}, {Key: "z", Value: "0"}}
	w.Properties.ContentType = "text/plain"
	w.Properties.PayloadFormat = v5Byte(1)
	w.Properties.ResponseTopic = "will/reply"
	w.Properties.CorrelationData = []byte{9, 8, 7}
	w.Properties.MessageExpiry = v5U32(60)
	r, _ := v5RawConnect(t, addr, &packet.Connect{ClientID: "wp", CleanStart: true, Will: w})
	r.Close()

	check := func(who string, m *paho.Publish) {
		t.Helper()
		if string(m.Payload) != "héllo" || m.QoS != 1 || !m.Retain {
			t.Fatalf("%s: payload %q qos %d retain %v, want héllo 1 true", who, m.Payload, m.QoS, m.Retain)
		}
		p := m.Properties
		want := paho.UserProperties{{Key: "k", Value: "1"}, {Key: "k", Value: "2"}, {Key: "z", Value: "0"}}
		if p == nil || !slices.Equal(p.User, want) || p.ContentType != "text/plain" ||
			p.PayloadFormat == nil || *p.PayloadFormat != 1 || p.ResponseTopic != "will/reply" ||
			!bytes.Equal(p.CorrelationData, []byte{9, 8, 7}) {
			t.Fatalf("%s: properties %+v", who, p)
		}
		if p.MessageExpiry == nil || *p.MessageExpiry > 60 || *p.MessageExpiry < 55 {
			t.Fatalf("%s: message expiry %v, want about 60", who, p.MessageExpiry)
		}
	}
	check("live subscriber", live.expect(t))
	late, _ := dialV5(t, addr, "wp-late", nil)
	late.sub(t, paho.SubscribeOptions{Topic: "will/props", QoS: 2})
	check("retained", late.expect(t))
}
