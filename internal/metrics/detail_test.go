package metrics

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// refuseBad lets everybody in but the user "bad", and lets nobody
// publish or subscribe under secret/.
type refuseBad struct{}

func (refuseBad) Allow(_ *broker.ClientInfo, _ broker.Action, topic string) bool {
	return !strings.HasPrefix(topic, "secret/")
}

func (refuseBad) Authenticate(_ context.Context, c *broker.ConnectInfo) (broker.Identity, packet.ReasonCode, error) {
	if c.Username == "bad" {
		return broker.Identity{}, packet.BadUsernameOrPassword, nil
	}
	return broker.Identity{Username: c.Username}, packet.Success, nil
}

// startDetailed runs a broker with a memory store and an authenticator
// behind a loopback listener counted as listener "tcp".
func startDetailed(t *testing.T, lim config.Limits) (*broker.Broker, string) {
	t.Helper()
	return startDetailedWith(t, lim, nil)
}

// startDetailedWith is startDetailed with setup run on the broker before
// it serves.
func startDetailedWith(t *testing.T, lim config.Limits, setup func(*broker.Broker)) (*broker.Broker, string) {
	t.Helper()
	b := broker.New(lim, nil)
	if setup != nil {
		setup(b)
	}
	b.SetStore(memory.New())
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	b.SetAuth(refuseBad{}, refuseBad{})
	return b, brokertest.ServeOn(t, b, "tcp")
}

// labelled gathers reg and returns every sample of the named metric by
// its label values joined with ",": counters, gauges, and for
// histograms the sample count.
func labelled(t *testing.T, reg prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetValue())
			}
			k := strings.Join(ls, ",")
			switch {
			case m.Counter != nil:
				out[k] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[k] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[k] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// The detailed metrics follow real traffic: per listener, per QoS, drops
// by reason, auth failures, queue totals and commit latency.
func TestDetailedMetricsFollowTraffic(t *testing.T) {
	lim := config.Default().Limits
	lim.MaxQueued = 2
	b, addr := startDetailed(t, lim)
	reg := New(FromBroker(b)).Registry()

	sub := dial(t, addr, "sub")
	sub.subscribe(t, "q/#")
	pub := dial(t, addr, "pub")
	pub.publish(t, "q/0", "aaaa", 0, false) // 4 bytes
	sub.next(t)
	pub.publish(t, "q/1", "bbbbbb", 1, false) // 6 bytes
	sub.next(t)
	pub.publish(t, "q/2", "cc", 2, false) // 2 bytes, delivered at QoS 1 (subscription QoS)
	sub.next(t)
	pub.publish(t, "q/kept", "r", 1, true) // a retained message is written to the store, synced
	sub.next(t)

	in := labelled(t, reg, "mqtt_publish_received_total")
	inB := labelled(t, reg, "mqtt_publish_received_bytes_total")
	if in["0"] != 1 || in["1"] != 2 || in["2"] != 1 || inB["0"] != 4 || inB["1"] != 7 || inB["2"] != 2 {
		t.Errorf("received by QoS: %v, bytes %v", in, inB)
	}
	out := labelled(t, reg, "mqtt_publish_sent_total")
	outB := labelled(t, reg, "mqtt_publish_sent_bytes_total")
	if out["0"] != 1 || out["1"] != 3 || out["2"] != 0 || outB["1"] != 9 {
		t.Errorf("sent by QoS: %v, bytes %v", out, outB)
	}
	if l := labelled(t, reg, "mqtt_listener_connections"); l["tcp"] != 2 {
		t.Errorf("listener connections open: %v, want tcp 2", l)
	}
	if l := labelled(t, reg, "mqtt_listener_connections_total"); l["tcp"] != 2 {
		t.Errorf("listener connections total: %v, want tcp 2", l)
	}
	if h := labelled(t, reg, "mqtt_store_commit_duration_seconds"); h["true"] == 0 {
		t.Errorf("synced commits observed: %v, want > 0", h)
	}

	// A refused login counts as an auth failure by reason.
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "intruder", Username: "bad", UsernameFlag: true, Password: []byte("x"), PasswordFlag: true, CleanStart: true})
	cancel()
	nc.Close()
	if err == nil || ca == nil || ca.ReasonCode != byte(packet.BadUsernameOrPassword) {
		t.Fatalf("connect as bad: ack %+v err %v, want 0x86", ca, err)
	}
	if af := labelled(t, reg, "mqtt_auth_failures_total"); af["bad_username_or_password"] != 1 || af["not_authorized"] != 0 {
		t.Errorf("auth failures: %v", af)
	}

	// The ACL refuses a publish and a subscription.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := pub.Publish(sctx, &paho.Publish{Topic: "secret/x", QoS: 1, Payload: []byte("s")}); err == nil {
		t.Error("publish to secret/x accepted")
	}
	sub.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "secret/#", QoS: 1}}})
	scancel()
	if dn := labelled(t, reg, "mqtt_auth_denied_total"); dn["publish"] != 1 || dn["subscribe"] != 1 {
		t.Errorf("denied: %v, want publish 1, subscribe 1", dn)
	}

	// An offline persistent session queues up to MaxQueued (2) QoS 1
	// messages and drops the rest as queue_full.
	nc2, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	slow := paho.NewClient(paho.ClientConfig{Conn: nc2})
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	expiry := uint32(300)
	if _, err := slow.Connect(ctx, &paho.Connect{ClientID: "slow", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "slow/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	slow.Disconnect(&paho.Disconnect{})
	nc2.Close()
	<-slow.Done()
	for deadline := time.Now().Add(5 * time.Second); b.Stats.Connections.Load() != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("slow client still connected")
		}
	}
	for range 5 {
		pub.publish(t, "slow/x", "m", 1, false)
	}
	if d := labelled(t, reg, "mqtt_messages_dropped_by_reason_total"); d["queue_full"] != 3 || d["expired"] != 0 {
		t.Errorf("dropped by reason: %v, want queue_full 3", d)
	}
	v := values(t, reg)
	if v["mqtt_messages_queued"] != 2 || v["mqtt_messages_inflight"] != 0 {
		t.Errorf("queued %v inflight %v, want 2 and 0", v["mqtt_messages_queued"], v["mqtt_messages_inflight"])
	}
	if v["mqtt_messages_dropped_total"] != 3 {
		t.Errorf("mqtt_messages_dropped_total = %v, want 3", v["mqtt_messages_dropped_total"])
	}
	// Three connections through listener tcp are open... the refused and
	// the slow one were closed; the total counts all four.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		open, total := labelled(t, reg, "mqtt_listener_connections")["tcp"], labelled(t, reg, "mqtt_listener_connections_total")["tcp"]
		if open == 2 && total == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener tcp: open %v total %v, want 2 and 4", open, total)
		}
	}
}

// promlint passes on the whole registry output with every labelled series
// present (traffic, a store, a listener).
func TestLintDetailed(t *testing.T) {
	b, addr := startDetailed(t, config.Default().Limits)
	c := dial(t, addr, "lint")
	c.publish(t, "lint/x", "1", 1, false)
	m := New(FromBroker(b))
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	names := map[string]bool{}
	mfs, _ := m.Registry().Gather()
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"mqtt_publish_received_total", "mqtt_publish_sent_bytes_total", "mqtt_messages_dropped_by_reason_total",
		"mqtt_auth_failures_total", "mqtt_auth_denied_total", "mqtt_listener_connections", "mqtt_listener_connections_total", "mqtt_messages_inflight",
		"mqtt_messages_queued", "mqtt_store_commit_duration_seconds", "mqtt_clients_connected_by_protocol", "mqtt_limits_exceeded_total"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
}
