package integration

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// aclRules: an operator client, a private tree per client ID (%c), a
// public tree whose secret part nobody else may read, and wills only on
// the client's own topic.
const aclRules = `allow all client admin #
deny read any public/secret/#
allow all any clients/%c/#
allow subscribe,read any public/#
allow publish any public/wills/%c
`

func startACLBroker(t *testing.T) (*starling.Server, string) {
	t.Helper()
	acl := filepath.Join(t.TempDir(), "acl")
	writeFile(t, acl, aclRules)
	return testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Auth.ACLFile = acl
	})
}

// %c with real MQTT 5 clients: a client has its own tree, not another's;
// a denied QoS 1 publish gets PUBACK 0x87 and a denied QoS 2 one PUBREC
// 0x87, neither is delivered, and the packet IDs are free again.
func TestACLClientIDSubstitution(t *testing.T) {
	t.Parallel()
	_, addr := startACLBroker(t)
	admin, _ := dialV5(t, addr, "admin", nil)
	admin.sub(t, paho.SubscribeOptions{Topic: "clients/#", QoS: 2})
	dev, _ := dialV5(t, addr, "dev-7", nil)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, _ := dev.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "clients/dev-7/#", QoS: 1}, {Topic: "clients/dev-8/#", QoS: 1}, {Topic: "clients/+/cmd", QoS: 1}}})
	if want := []byte{1, byte(packet.NotAuthorized), byte(packet.NotAuthorized)}; sa == nil || string(sa.Reasons) != string(want) {
		t.Fatalf("SUBACK %+v, want %x", sa, want)
	}
	for _, qos := range []byte{1, 2} {
		// paho reports the PUBACK's error code as an error too, the
		// PUBREC's only in the response.
		r, err := dev.Publish(ctx, &paho.Publish{Topic: "clients/dev-8/x", QoS: qos, Payload: []byte("intrusion")})
		if r == nil || r.ReasonCode != byte(packet.NotAuthorized) {
			t.Fatalf("QoS %d publish to another client's tree: %v %+v, want 0x87", qos, err, r)
		}
	}
	// The same packet flows go on: its own tree, at QoS 2 too.
	for _, qos := range []byte{1, 2} {
		dev.pub(t, &paho.Publish{Topic: "clients/dev-7/state", QoS: qos, Payload: []byte{'0' + qos}})
		if m := admin.expect(t); m.Topic != "clients/dev-7/state" || m.Payload[0] != '0'+qos {
			t.Fatalf("admin got %s %q, want clients/dev-7/state", m.Topic, m.Payload)
		}
		if m := dev.expect(t); m.Topic != "clients/dev-7/state" {
			t.Fatalf("dev-7 got %s", m.Topic)
		}
	}
	admin.expectNone(t, 200*time.Millisecond) // the intrusions were not delivered
}

// Retained messages are checked like live ones on delivery: a subscriber
// to public/# gets the retained public/news, not public/secret/key.
func TestACLRetainedDelivery(t *testing.T) {
	t.Parallel()
	_, addr := startACLBroker(t)
	admin, _ := dialV5(t, addr, "admin", nil)
	admin.pub(t, &paho.Publish{Topic: "public/secret/key", QoS: 1, Retain: true, Payload: []byte("hunter2")})
	admin.pub(t, &paho.Publish{Topic: "public/news", QoS: 1, Retain: true, Payload: []byte("hello")})

	reader, _ := dialV5(t, addr, "reader", nil)
	reader.sub(t, paho.SubscribeOptions{Topic: "public/#", QoS: 1})
	if m := reader.expect(t); m.Topic != "public/news" || !m.Retain {
		t.Fatalf("got %s retain=%v, want the retained public/news", m.Topic, m.Retain)
	}
	admin.pub(t, &paho.Publish{Topic: "public/secret/key2", QoS: 1, Payload: []byte("live")})
	reader.expectNone(t, 300*time.Millisecond)

	// The operator reads both, retained.
	admin.sub(t, paho.SubscribeOptions{Topic: "public/#", QoS: 1})
	got := map[string]bool{}
	for range 2 {
		m := admin.expect(t)
		got[m.Topic] = m.Retain
	}
	if !got["public/secret/key"] || !got["public/news"] {
		t.Fatalf("admin got retained %v, want both", got)
	}
}

// A will on a topic the ACL denies the client is refused at CONNECT
// (0x87; 3.1.1: return code 5), so it can never be published; one on an
// allowed topic is published when the client drops.
func TestACLWill(t *testing.T) {
	t.Parallel()
	_, addr := startACLBroker(t)
	watcher, _ := dialV5(t, addr, "watcher", nil)
	watcher.sub(t, paho.SubscribeOptions{Topic: "public/#", QoS: 1})

	dialWill := func(id, willTopic string) (net.Conn, *paho.Connack, error) {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			WillMessage: &paho.WillMessage{Topic: willTopic, QoS: 1, Payload: []byte(id + " gone")}})
		t.Cleanup(func() { nc.Close() })
		return nc, ack, err
	}
	if _, ack, err := dialWill("w-1", "public/wills/w-2"); err == nil || ack == nil || ack.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("will on another client's topic: %v %+v, want CONNACK 0x87", err, ack)
	}
	v3, err := v3TryConnect(t, addr, "w-3", func(o *mqtt.ClientOptions) { o.SetWill("public/wills/w-1", "x", 1, false) })
	if err == nil || v3.tok.ReturnCode() != 5 {
		t.Fatalf("3.1.1 will on another client's topic: %v, want return code 5", err)
	}

	nc, ack, err := dialWill("w-4", "public/wills/w-4")
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("will on its own topic: %v %+v", err, ack)
	}
	nc.Close() // no DISCONNECT: the will goes out
	if m := watcher.expect(t); m.Topic != "public/wills/w-4" || string(m.Payload) != "w-4 gone" {
		t.Fatalf("watcher got %s %q, want w-4's will", m.Topic, m.Payload)
	}
	watcher.expectNone(t, 200*time.Millisecond)
}

// MQTT 3.1.1 with paho.mqtt.golang: a denied subscription gets 0x80 in
// SUBACK, and a denied publish is acknowledged as usual and silently not
// forwarded [MQTT-3.3.5-2].
func TestACLV3(t *testing.T) {
	t.Parallel()
	_, addr := startACLBroker(t)
	admin := v3Connect(t, addr, "admin", nil)
	admin.sub("clients/#", 1)
	dev := v3Connect(t, addr, "v3-dev", nil)

	tok := dev.Subscribe("clients/other/#", 1, nil)
	if !tok.WaitTimeout(v3Wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if got := tok.(*mqtt.SubscribeToken).Result()["clients/other/#"]; got != 0x80 {
		t.Fatalf("denied subscription: SUBACK 0x%02x, want 0x80", got)
	}
	dev.sub("clients/v3-dev/#", 1)

	for _, qos := range []byte{0, 1, 2} {
		dev.pub("clients/other/x", qos, false, "intrusion") // completes: PUBACK / PUBCOMP as usual
	}
	dev.pub("clients/v3-dev/x", 1, false, "mine")
	dev.expectMsg("clients/v3-dev/x", "mine", 1, false)
	admin.expectMsg("clients/v3-dev/x", "mine", 1, false) // after the intrusions, in order
	admin.expectNone(200 * time.Millisecond)
}
