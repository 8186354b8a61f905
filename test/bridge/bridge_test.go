package bridge

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// edgeRules forward sensors/# out as site1/sensors/# and bring
// site1/cmd/# in as remote/cmd/#.
var edgeRules = []config.BridgeTopic{
	{Direction: "out", Filter: "sensors/#", QoS: 2, RemotePrefix: "site1/"},
	{Direction: "in", Filter: "cmd/#", QoS: 2, LocalPrefix: "remote/", RemotePrefix: "site1/"},
}

// startEdge runs a Starling with one bridge to remote.
func startEdge(t *testing.T, remote string, rules []config.BridgeTopic, mutate func(*config.Bridge)) (*starling.Server, string) {
	t.Helper()
	return testutil.StartBroker(t, func(c *starling.Config) {
		b := config.Bridge{Name: "cloud", Remote: remote, Topics: rules, ReconnectMin: 50 * 1e6, ReconnectMax: 500 * 1e6}
		if mutate != nil {
			mutate(&b)
		}
		c.Bridges = []config.Bridge{b}
	})
}

// TestBridgeMosquittoRemap: out and in through a real Mosquitto, topics
// remapped by the prefixes, at QoS 0, 1 and 2 (capped by the rule), over
// MQTT 5 and MQTT 3.1.1.
func TestBridgeMosquittoRemap(t *testing.T) {
	for _, proto := range []string{"5", "3.1.1"} {
		t.Run(proto, func(t *testing.T) { testMosquittoRemap(t, proto) })
	}
}

func testMosquittoRemap(t *testing.T, proto string) {
	m := startMosquitto(t, "")
	srv, edge := startEdge(t, "mqtt://"+m.addr, edgeRules, func(b *config.Bridge) { b.Protocol = proto })
	local := dial(t, edge, "local")
	local.sub(t, "remote/#")
	cloud := dial(t, m.addr, "cloud-app")
	cloud.sub(t, "site1/sensors/#")

	warmUp(t, local, cloud, "sensors/warm")
	warmUp(t, cloud, local, "site1/cmd/warm")

	for qos := byte(0); qos <= 2; qos++ {
		local.pub(t, "sensors/temp", qos, fmt.Sprint("out", qos))
		p := cloud.expect(t)
		if p.Topic != "site1/sensors/temp" || string(p.Payload) != fmt.Sprint("out", qos) || p.QoS != qos {
			t.Errorf("out QoS %d: got %q on %s at QoS %d", qos, p.Payload, p.Topic, p.QoS)
		}
		cloud.pub(t, "site1/cmd/reboot", qos, fmt.Sprint("in", qos))
		p = local.expect(t)
		if p.Topic != "remote/cmd/reboot" || string(p.Payload) != fmt.Sprint("in", qos) || p.QoS != qos {
			t.Errorf("in QoS %d: got %q on %s at QoS %d", qos, p.Payload, p.Topic, p.QoS)
		}
	}
	// A retained message stays retained on the remote: a new subscriber
	// there gets it.
	local.Pub(t, &paho.Publish{Topic: "sensors/state", QoS: 1, Retain: true, Payload: []byte("on")})
	if p := cloud.expect(t); p.Topic != "site1/sensors/state" || string(p.Payload) != "on" {
		t.Fatalf("cloud got %q on %s, want the retained state", p.Payload, p.Topic)
	}
	late := dial(t, m.addr, "late-app")
	late.sub(t, "site1/sensors/state")
	if p := late.expect(t); string(p.Payload) != "on" || !p.Retain {
		t.Errorf("late subscriber got %q retain=%v, want the retained \"on\"", p.Payload, p.Retain)
	}
	// Topics outside the rules stay where they are.
	local.pub(t, "other/x", 1, "local only")
	cloud.pub(t, "site1/other", 1, "cloud only")
	local.pub(t, "sensors/end", 1, "end")
	if p := cloud.expect(t); p.Topic != "site1/sensors/end" {
		t.Errorf("cloud got %q on %s, want only the bridged end marker", p.Payload, p.Topic)
	}
	// The counters follow the acknowledgements, which may come after the
	// messages themselves.
	waitFor(t, "sent and received counted", func() bool { st := status(srv); return st.Sent >= 6 && st.Received >= 4 })
	if st := status(srv); !st.Connected || st.Dropped != 0 || st.LastError != "" {
		t.Errorf("status %+v: want connected, none dropped, no error", st)
	}
	drained(t, srv)
}

// TestBridgeQoSCap: a rule's QoS caps what it forwards.
func TestBridgeQoSCap(t *testing.T) {
	m := startMosquitto(t, "")
	_, edge := startEdge(t, "mqtt://"+m.addr, []config.BridgeTopic{{Direction: "out", Filter: "sensors/#", QoS: 1}}, nil)
	local := dial(t, edge, "local")
	cloud := dial(t, m.addr, "cloud-app")
	cloud.sub(t, "sensors/#")
	warmUp(t, local, cloud, "sensors/warm")
	local.pub(t, "sensors/x", 2, "capped")
	if p := cloud.expect(t); p.QoS != 1 || string(p.Payload) != "capped" {
		t.Errorf("got %q at QoS %d, want QoS 1", p.Payload, p.QoS)
	}
}

// TestBridgeSessionIDReserved: no network client can take a bridge's
// session: the $internal/ client ID prefix is refused (0x85).
func TestBridgeSessionIDReserved(t *testing.T) {
	_, addr := testutil.StartBroker(t, nil)
	_, ack, err := testutil.TryDialPaho(t, addr, "$internal/bridge/cloud", nil)
	if err == nil || ack == nil || ack.ReasonCode != 0x85 {
		t.Errorf("connect as $internal/bridge/cloud: %v, CONNACK %+v; want refused with 0x85", err, ack)
	}
}
