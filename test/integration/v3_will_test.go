package integration

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// The will is published when the network connection closes without
// DISCONNECT [MQTT-3.1.2-8]: a raw socket closed by the client.
func TestV3WillOnAbnormalCloseRaw(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	w := v3Watcher(t, addr, "v3-willraw-watch", "will/raw/#")
	nc := v3SocketConnect(t, addr, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "v3-willraw", KeepAlive: 30,
		Will: &packet.Will{Topic: "will/raw/t", Payload: []byte("gone"), QoS: 1}})
	w.expectNone(100 * time.Millisecond) // not before the connection ends
	nc.Close()
	w.expectMsg("will/raw/t", "gone", 1, false)
	w.expectNone(100 * time.Millisecond)
}

// A paho connection cut without DISCONNECT publishes the will with its QoS
// and retain flag: retained, so a later subscriber gets it with retain set.
func TestV3WillPahoAbnormalRetainQoS(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	w := v3Watcher(t, addr, "v3-willpaho-watch", "will/paho/#")
	c := v3Connect(t, addr, "v3-willpaho", func(o *mqtt.ClientOptions) {
		o.SetWill("will/paho/status", "offline", 2, true)
	})
	c.kill()
	w.expectMsg("will/paho/status", "offline", 2, false) // live forward: retain cleared
	w.expectNone(100 * time.Millisecond)

	late := v3Connect(t, addr, "v3-willpaho-late", nil)
	late.sub("will/paho/status", 2)
	late.expectMsg("will/paho/status", "offline", 2, true)

	// A QoS 0, non-retained will: QoS 0 and nothing retained.
	c0 := v3Connect(t, addr, "v3-willpaho0", func(o *mqtt.ClientOptions) {
		o.SetWill("will/paho/q0", "bye0", 0, false)
	})
	c0.kill()
	w.expectMsg("will/paho/q0", "bye0", 0, false)
	late0 := v3Connect(t, addr, "v3-willpaho-late0", nil)
	late0.sub("will/paho/q0", 2)
	late0.expectNone(150 * time.Millisecond)
}

// DISCONNECT discards the will [MQTT-3.1.2-10, 3.14.4-3].
func TestV3WillNotPublishedAfterDisconnect(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	w := v3Watcher(t, addr, "v3-willdisc-watch", "will/disc/#")

	c := v3Connect(t, addr, "v3-willdisc", func(o *mqtt.ClientOptions) {
		o.SetWill("will/disc/paho", "should not appear", 1, true)
	})
	c.Disconnect(250)

	r := v3RawConnectWill(t, addr, "v3-willdisc-raw", &packet.Will{Topic: "will/disc/raw", Payload: []byte("should not appear"), QoS: 1})
	r.Send(&packet.Disconnect{})
	r.ExpectClosed(0)

	w.expectNone(300 * time.Millisecond)
	late := v3Connect(t, addr, "v3-willdisc-late", nil)
	late.sub("will/disc/#", 1)
	late.expectNone(150 * time.Millisecond)
}

// A takeover is not a normal disconnect: the old connection's will is
// published [MQTT-3.1.4-3] (3.1.1 has no will delay, so it is sent now).
func TestV3WillOnTakeover(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	w := v3Watcher(t, addr, "v3-willtake-watch", "will/take/#")
	v3RawConnectWill(t, addr, "v3-willtake", &packet.Will{Topic: "will/take/t", Payload: []byte("taken"), QoS: 1})
	v3RawConnect(t, addr, packet.V311, "v3-willtake", true)
	w.expectMsg("will/take/t", "taken", 1, false)
}

// A will with a wildcard topic is refused at CONNECT [MQTT-3.3.2-2] (a will topic is a topic name).
func TestV3WillInvalidTopicRefused(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r := v3Raw(t, addr)
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "v3-willbad", KeepAlive: 30,
		Will: &packet.Will{Topic: "will/+/bad", Payload: []byte("x")}})
	p, err := r.Next(v3Wait)
	if err == nil {
		ack, ok := p.(*packet.Connack)
		if !ok || ack.ReasonCode == 0 {
			t.Fatalf("will with wildcard topic: got %#v, want a refusal or close", p)
		}
	}
	r.ExpectClosed(0)
}
