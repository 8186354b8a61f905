package integration

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// auth.anonymous_listeners: anonymous clients are let in on the tcp
// listener only; on another listener (listen_any, plain MQTT) they get
// CONNACK 0x87 (v5) or 5 (3.1.1), while a user with a password gets in on
// both, and the anonymous tcp client exchanges messages with that user.
func TestAnonymousPerListener(t *testing.T) {
	t.Parallel()
	pw := alicePasswordFile(t, auth.DefaultArgon2)
	srv, tcp := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.ListenAny = "127.0.0.1:0"
		c.Auth.AllowAnonymous = false
		c.Auth.AnonymousListeners = []string{"tcp"}
		c.Auth.PasswordFile = pw
	})
	other := srv.ListenAnyAddr().String()

	// Anonymous on tcp: in, both versions.
	anon, _ := dialV5(t, tcp, "anon-tcp", nil)
	anon.sub(t, paho.SubscribeOptions{Topic: "local/#", QoS: 1})
	v3RawConnect(t, tcp, packet.V311, "anon-tcp-v3", true)

	// Anonymous elsewhere: refused.
	if _, ack := v5RawConnect(t, other, &packet.Connect{ClientID: "anon-any", CleanStart: true}); ack.ReasonCode != packet.NotAuthorized {
		t.Fatalf("anonymous v5 on listen_any: CONNACK 0x%02x, want 0x87", byte(ack.ReasonCode))
	}
	r3 := testutil.Dial(t, other, packet.V311)
	if ack := r3.Connect("anon-any-v3", true); ack.ReasonCode != packet.V3NotAuthorized {
		t.Fatalf("anonymous 3.1.1 on listen_any: CONNACK %d, want 5", byte(ack.ReasonCode))
	}
	// And over WebSocket (the http listener), with paho.mqtt.golang:
	// connection refused, not authorized (5).
	o := mqtt.NewClientOptions().AddBroker("ws://" + srv.HTTPAddr().String() + "/mqtt").SetClientID("anon-ws").
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	ws := mqtt.NewClient(o)
	tok := ws.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != packets.ErrorRefusedNotAuthorised {
		ws.Disconnect(0)
		t.Fatalf("anonymous 3.1.1 over ws: %v, want %v", tok.Error(), packets.ErrorRefusedNotAuthorised)
	}
	// A user name with a wrong password is refused on the anonymous
	// listener too: it is checked, not ignored.
	if c, ack := dialV5(t, tcp, "wrong-tcp", &paho.Connect{CleanStart: true, Username: "alice", UsernameFlag: true,
		Password: []byte("nope"), PasswordFlag: true}); c != nil || ack == nil || ack.ReasonCode != byte(packet.BadUsernameOrPassword) {
		t.Fatalf("wrong password on tcp: client %v ack %+v, want CONNACK 0x86", c != nil, ack)
	}

	alice, _ := dialV5(t, other, "alice-any", &paho.Connect{CleanStart: true, KeepAlive: 30, Username: "alice", UsernameFlag: true,
		Password: []byte("s3cret"), PasswordFlag: true})
	alice.pub(t, &paho.Publish{Topic: "local/x", QoS: 1, Payload: []byte("from alice")})
	if m := anon.expect(t); string(m.Payload) != "from alice" {
		t.Fatalf("anonymous tcp client got %q", m.Payload)
	}
}
