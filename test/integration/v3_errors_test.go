package integration

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// v3ExpectClosedSilently asserts the broker closes the connection without
// sending anything first: no CONNACK, no DISCONNECT (3.1.1 has no server
// DISCONNECT), no bytes at all.
func v3ExpectClosedSilently(t *testing.T, r *testutil.Raw, what string) {
	t.Helper()
	p, err := r.Next(v3Wait)
	var ne net.Error
	var pe *packet.Error
	switch {
	case err == nil:
		if ack, ok := p.(*packet.Connack); ok {
			t.Fatalf("%s: got CONNACK return code 0x%02x before close, want a silent close", what, byte(ack.ReasonCode))
		}
		t.Fatalf("%s: got %T before close, want a silent close", what, p)
	case errors.As(err, &pe):
		t.Fatalf("%s: got undecodable bytes before close: %v", what, err)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("%s: connection not closed within %v", what, v3Wait)
	}
}

// v3Str encodes an MQTT UTF-8 string (length prefix, bytes as given).
func v3Str(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// v3Pkt builds a packet from a first byte and a body (body < 128 bytes).
func v3Pkt(first byte, body ...[]byte) []byte {
	var b []byte
	for _, p := range body {
		b = append(b, p...)
	}
	if len(b) > 127 {
		panic("v3Pkt: body too long")
	}
	return append([]byte{first, byte(len(b))}, b...)
}

// Protocol violations after CONNECT: 3.1.1 has no server DISCONNECT, so the
// broker closes the connection silently [MQTT-4.8.0-1], the will is
// published (the client did not DISCONNECT) [MQTT-3.1.2-8], nothing the
// packet carried is forwarded, and the broker keeps serving others.
func TestV3MalformedPacketsCloseAndPublishWill(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	watch := v3Watcher(t, addr, "v3-mal-watch", "#")

	cases := []struct {
		name string
		raw  []byte
	}{
		{"remaining length over 4 bytes", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"SUBSCRIBE reserved flags 0000", v3Pkt(0x80, []byte{0, 1}, v3Str("mal/x"), []byte{1})},
		{"SUBSCRIBE reserved flags 0011", v3Pkt(0x83, []byte{0, 1}, v3Str("mal/x"), []byte{1})},
		{"UNSUBSCRIBE reserved flags", v3Pkt(0xa0, []byte{0, 1}, v3Str("mal/x"))},
		{"PUBREL reserved flags", v3Pkt(0x60, []byte{0, 1})},
		{"PINGREQ reserved flags", []byte{0xc1, 0}},
		{"DISCONNECT reserved flags", []byte{0xe2, 0}},
		{"PUBLISH QoS 3", v3Pkt(0x36, v3Str("mal/x"), []byte{0, 1}, []byte("qos3"))},
		{"PUBLISH wildcard +", v3Pkt(0x30, v3Str("mal/+"), []byte("plus"))},
		{"PUBLISH wildcard #", v3Pkt(0x32, v3Str("mal/#"), []byte{0, 1}, []byte("hash"))},
		{"PUBLISH invalid UTF-8 topic", v3Pkt(0x30, v3Str("mal/\xc3\x28"), []byte("utf8"))},
		{"PUBLISH topic with U+0000", v3Pkt(0x30, v3Str("mal/a\x00b"), []byte("nul"))},
		{"PUBLISH surrogate in topic", v3Pkt(0x30, v3Str("mal/\xed\xa0\x80"), []byte("surrogate"))},
		{"PUBLISH empty topic", v3Pkt(0x30, v3Str(""), []byte("empty"))},
		{"PUBLISH QoS 1 packet ID 0", v3Pkt(0x32, v3Str("mal/x"), []byte{0, 0}, []byte("id0"))},
		{"PUBLISH QoS 2 packet ID 0", v3Pkt(0x34, v3Str("mal/x"), []byte{0, 0}, []byte("id0"))},
		{"SUBSCRIBE packet ID 0", v3Pkt(0x82, []byte{0, 0}, v3Str("mal/x"), []byte{1})},
		{"UNSUBSCRIBE packet ID 0", v3Pkt(0xa2, []byte{0, 0}, v3Str("mal/x"))},
		{"SUBSCRIBE without filters", v3Pkt(0x82, []byte{0, 1})},
		{"SUBSCRIBE requested QoS 3", v3Pkt(0x82, []byte{0, 1}, v3Str("mal/x"), []byte{3})},
		{"SUBSCRIBE invalid UTF-8 filter", v3Pkt(0x82, []byte{0, 1}, v3Str("mal/\xff"), []byte{1})},
		{"UNSUBSCRIBE without filters", v3Pkt(0xa2, []byte{0, 1})},
		{"truncated string length", v3Pkt(0x30, []byte{0, 9}, []byte("mal"))},
		{"second CONNECT", v3Pkt(0x10, v3Str("MQTT"), []byte{4, 2, 0, 30}, v3Str("again"))},
		{"packet type 0", []byte{0x00, 0}},
		{"AUTH in 3.1.1", []byte{0xf0, 0}},
		{"CONNACK from client", []byte{0x20, 2, 0, 0}},
		{"SUBACK from client", v3Pkt(0x90, []byte{0, 1, 0})},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("v3-mal-%02d", i)
			willTopic := "will/mal/" + id
			r := v3RawConnectWill(t, addr, id, &packet.Will{Topic: willTopic, Payload: []byte(tc.name), QoS: 1})
			r.WriteRaw(tc.raw)
			v3ExpectClosedSilently(t, r, tc.name)
			// The will is the only thing anyone sees: none of the payloads
			// above reaches the '#' subscriber.
			watch.expectMsg(willTopic, tc.name, 1, false)
		})
	}
	watch.expectNone(100 * time.Millisecond)

	// The broker still serves a new client.
	a := v3Connect(t, addr, "v3-mal-after", nil)
	a.sub("mal/after", 1)
	a.pub("mal/after", 1, false, "still serving")
	a.expectMsg("mal/after", "still serving", 1, false)
}

// An invalid topic filter is not a malformed packet: 3.1.1 answers SUBACK
// 0x80 for it and grants the others [MQTT-3.9.3-2]; the connection stays.
func TestV3InvalidFilterSuback80(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r := v3RawConnect(t, addr, packet.V311, "v3-badfilter", true)
	r.Send(&packet.Subscribe{PacketID: 4, Subscriptions: []packet.Subscription{
		{Filter: "ok/+", QoS: 1}, {Filter: "bad/#/x", QoS: 1}, {Filter: "bad+", QoS: 0}, {Filter: "ok2/#", QoS: 2},
	}})
	sa, ok := r.Read().(*packet.Suback)
	if !ok {
		t.Fatalf("want SUBACK")
	}
	want := []packet.ReasonCode{1, 0x80, 0x80, 2}
	if sa.PacketID != 4 || fmt.Sprint(sa.ReasonCodes) != fmt.Sprint(want) {
		t.Fatalf("SUBACK id %d codes %v, want id 4 codes %v", sa.PacketID, sa.ReasonCodes, want)
	}
	r.Send(&packet.Publish{Topic: "ok/a", Payload: []byte("x")})
	v3RawExpectPublish(t, r, "ok/a", "x", 0)
	// UNSUBACK in 3.1.1 is just the packet ID.
	r.Send(&packet.Unsubscribe{PacketID: 6, Filters: []string{"ok/+", "never/subscribed"}})
	if ua, ok := r.Read().(*packet.Unsuback); !ok || ua.PacketID != 6 {
		t.Fatalf("want UNSUBACK 6, got %#v", ua)
	}
	r.Send(&packet.Publish{Topic: "ok/a", Payload: []byte("y")})
	v3RawExpectNothing(t, r, 150*time.Millisecond)
}

// Before CONNECT: anything else first, or a CONNECT the broker cannot
// accept, closes the connection without CONNACK [MQTT-3.1.0-1, 3.1.4-1].
func TestV3FirstPacketNotConnect(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	cases := []struct {
		name string
		raw  []byte
	}{
		{"PINGREQ", []byte{0xc0, 0}},
		{"PUBLISH", v3Pkt(0x30, v3Str("pre/x"), []byte("early"))},
		{"SUBSCRIBE", v3Pkt(0x82, []byte{0, 1}, v3Str("pre/#"), []byte{0})},
		{"DISCONNECT", []byte{0xe0, 0}},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"unknown protocol name", v3Pkt(0x10, v3Str("MQTX"), []byte{4, 2, 0, 30}, v3Str("pre-name"))},
		{"CONNECT reserved flag", v3Pkt(0x10, v3Str("MQTT"), []byte{4, 3, 0, 30}, v3Str("pre-flag"))},
		{"CONNECT will QoS 3", v3Pkt(0x10, v3Str("MQTT"), []byte{4, 0x1e, 0, 30}, v3Str("pre-wq3"), v3Str("w/t"), v3Str("p"))},
		{"CONNECT will QoS without will flag", v3Pkt(0x10, v3Str("MQTT"), []byte{4, 0x0a, 0, 30}, v3Str("pre-wq"))},
		{"CONNECT password without user name", v3Pkt(0x10, v3Str("MQTT"), []byte{4, 0x42, 0, 30}, v3Str("pre-pw"), v3Str("secret"))},
		{"CONNECT truncated client ID", v3Pkt(0x10, v3Str("MQTT"), []byte{4, 2, 0, 30}, []byte{0, 20}, []byte("short"))},
		{"CONNECT invalid UTF-8 client ID", v3Pkt(0x10, v3Str("MQTT"), []byte{4, 2, 0, 30}, v3Str("pre-\xff"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := v3Raw(t, addr)
			r.WriteRaw(tc.raw)
			v3ExpectClosedSilently(t, r, tc.name)
		})
	}
	// Still serving.
	c := v3Connect(t, addr, "v3-prec-after", nil)
	c.sub("pre/#", 0)
	c.pub("pre/ok", 0, false, "ok")
	c.expectMsg("pre/ok", "ok", 0, false)
}

// A connection that sends nothing is closed after limits.connect_timeout,
// and so is one that sends half a CONNECT.
func TestV3ConnectTimeout(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.ConnectTimeout = 500 * time.Millisecond })
	for _, tc := range []struct {
		name string
		raw  []byte
	}{{"nothing", nil}, {"half a CONNECT", []byte{0x10, 20, 0, 4, 'M', 'Q'}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := v3Raw(t, addr)
			start := time.Now()
			if tc.raw != nil {
				r.WriteRaw(tc.raw)
			}
			v3ExpectClosedSilently(t, r, tc.name)
			if d := time.Since(start); d < 400*time.Millisecond || d > 3*time.Second {
				t.Fatalf("closed after %v, want about 500ms", d)
			}
		})
	}
	// A client that does connect in time is not cut off at 500ms.
	r := v3RawConnect(t, addr, packet.V311, "v3-ct-ok", true)
	time.Sleep(700 * time.Millisecond)
	r.Send(&packet.Pingreq{})
	if _, ok := r.Read().(*packet.Pingresp); !ok {
		t.Fatalf("connected client closed by the connect timeout")
	}
}

// Keep alive: a client silent for 1.5 times its keep alive is disconnected
// and its will published [MQTT-3.1.2-24]; PINGREQ keeps it alive.
func TestV3KeepAliveTimeoutPublishesWill(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	watch := v3Watcher(t, addr, "v3-ka-watch", "will/ka/#")

	alive := v3Raw(t, addr)
	alive.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "v3-ka-alive", KeepAlive: 1,
		Will: &packet.Will{Topic: "will/ka/alive", Payload: []byte("alive died")}})
	alive.Read()

	r := v3Raw(t, addr)
	start := time.Now()
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "v3-ka", KeepAlive: 1,
		Will: &packet.Will{Topic: "will/ka/t", Payload: []byte("timed out"), QoS: 1}})
	if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("want CONNACK 0")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 4 { // 2 s of pings at 500 ms
			time.Sleep(500 * time.Millisecond)
			alive.Send(&packet.Pingreq{})
		}
	}()
	v3ExpectClosedSilently(t, r, "keep alive 1s")
	if d := time.Since(start); d < 1200*time.Millisecond || d > 4*time.Second {
		t.Fatalf("closed after %v, want about 1.5s", d)
	}
	watch.expectMsg("will/ka/t", "timed out", 1, false)
	<-done
	for range 4 {
		if _, ok := alive.Read().(*packet.Pingresp); !ok {
			t.Fatalf("pinging client: want PINGRESP")
		}
	}
	watch.expectNone(10 * time.Millisecond)
}

// limits.max_keep_alive cannot be told to a 3.x client, so one asking for
// no keep alive or a longer one is refused; within the cap it connects.
func TestV3KeepAliveCapRefuses(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxKeepAlive = 60 })
	for _, ka := range []time.Duration{0, 120 * time.Second} {
		_, err := v3TryConnect(t, addr, fmt.Sprintf("ka-%d", ka/time.Second), func(o *mqtt.ClientOptions) { o.SetKeepAlive(ka) })
		if err == nil || !strings.Contains(err.Error(), "identifier rejected") {
			t.Fatalf("keep alive %s over a cap of 60 s: err %v, want identifier rejected", ka, err)
		}
	}
	c := v3Connect(t, addr, "ka-ok", func(o *mqtt.ClientOptions) { o.SetKeepAlive(60 * time.Second) })
	c.close()
}
