package metrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
)

// startBroker runs a broker behind a loopback TCP listener until the test
// ends and returns it with the listener's address.
func startBroker(t *testing.T) (*broker.Broker, string) {
	t.Helper()
	return brokertest.Start(t, config.Default().Limits)
}

// client is a paho.golang MQTT 5 client whose received messages arrive on
// Recv.
type client struct{ *brokertest.Paho }

func dial(t *testing.T, addr, id string) *client {
	t.Helper()
	c, _ := brokertest.DialPaho(t, addr, id, &paho.Connect{CleanStart: true, KeepAlive: 30})
	return &client{c}
}

func (c *client) close() { c.Close() }

func (c *client) subscribe(t *testing.T, filter string) {
	t.Helper()
	c.Sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
}

func (c *client) publish(t *testing.T, topic, payload string, qos byte, retain bool) {
	t.Helper()
	c.Pub(t, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain})
}

func (c *client) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.Recv:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5 s")
		return nil
	}
}

// values gathers reg and returns every sample without labels by name.
func values(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.Counter != nil:
				out[mf.GetName()] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[mf.GetName()] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

func TestLint(t *testing.T) {
	b, _ := startBroker(t)
	m := New(FromBroker(b))
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	// The byte counters appear only with a broker that counts bytes.
	problems, err = testutil.CollectAndLint(newCollector(fakeSource{HasBytes: true, BytesIn: 1}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestNamesAndRuntime(t *testing.T) {
	b, addr := startBroker(t)
	v := values(t, New(FromBroker(b)).Registry())
	for _, name := range []string{"mqtt_clients_connected", "mqtt_clients_connections_total", "mqtt_messages_received_total",
		"mqtt_messages_sent_total", "mqtt_messages_dropped_total", "mqtt_store_commit_errors_total", "mqtt_sessions_current",
		"mqtt_subscriptions_current", "mqtt_retained_messages", "go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := v[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	// The broker counts bytes: a client's CONNECT and CONNACK show up.
	dial(t, addr, "bytes")
	// The writer counts after its write returns, which can be just after the
	// client has read the CONNACK: look again for a moment.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		v = values(t, New(FromBroker(b)).Registry())
		if v["mqtt_network_received_bytes_total"] > 0 && v["mqtt_network_sent_bytes_total"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("byte counters after a client connected: received %v, sent %v, want > 0",
				v["mqtt_network_received_bytes_total"], v["mqtt_network_sent_bytes_total"])
		}
	}
}

// Two registries for two brokers do not share anything.
func TestRegistryPerBroker(t *testing.T) {
	b1, addr1 := startBroker(t)
	b2, _ := startBroker(t)
	m1, m2 := New(FromBroker(b1)), New(FromBroker(b2))
	dial(t, addr1, "only-on-one")
	if got := values(t, m1.Registry())["mqtt_clients_connected"]; got != 1 {
		t.Errorf("broker 1 connected = %v, want 1", got)
	}
	if got := values(t, m2.Registry())["mqtt_clients_connected"]; got != 0 {
		t.Errorf("broker 2 connected = %v, want 0", got)
	}
}

func TestValuesFollowTraffic(t *testing.T) {
	b, addr := startBroker(t)
	reg := New(FromBroker(b)).Registry()
	before := values(t, reg)

	sub := dial(t, addr, "sub")
	sub.subscribe(t, "t/#")
	pub := dial(t, addr, "pub")
	for i := range 3 {
		pub.publish(t, fmt.Sprintf("t/%d", i), "x", 1, false)
		sub.next(t)
	}
	pub.publish(t, "t/kept", "r", 1, true)
	sub.next(t)

	v := values(t, reg)
	want := map[string]float64{
		"mqtt_clients_connected":         2,
		"mqtt_clients_connections_total": before["mqtt_clients_connections_total"] + 2,
		"mqtt_messages_received_total":   before["mqtt_messages_received_total"] + 4,
		"mqtt_messages_sent_total":       before["mqtt_messages_sent_total"] + 4,
		"mqtt_sessions_current":          2,
		"mqtt_subscriptions_current":     1,
		"mqtt_retained_messages":         1,
	}
	for name, w := range want {
		if v[name] != w {
			t.Errorf("%s = %v, want %v", name, v[name], w)
		}
	}
	pub.close()
	deadline := time.Now().Add(5 * time.Second)
	for values(t, reg)["mqtt_clients_connected"] != 1 {
		if time.Now().After(deadline) {
			t.Fatal("mqtt_clients_connected stayed above 1 after a client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type fakeSource Counters

func (f fakeSource) Counters() Counters { return Counters(f) }

func TestByteCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(fakeSource{HasBytes: true, BytesIn: 10, BytesOut: 20}))
	v := values(t, reg)
	if v["mqtt_network_received_bytes_total"] != 10 || v["mqtt_network_sent_bytes_total"] != 20 {
		t.Errorf("byte counters: %v", v)
	}
}

// Connected clients are split by protocol version.
func TestConnectedByProtocol(t *testing.T) {
	b, addr := startBroker(t)
	dial(t, addr, "by-proto") // paho.golang: MQTT 5
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c := FromBroker(b).Counters()
		if c.ConnectedByProtocol["5.0"] == 1 && c.ConnectedByProtocol["3.1.1"] == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connected by protocol %v, want 5.0: 1", c.ConnectedByProtocol)
		}
	}
}
