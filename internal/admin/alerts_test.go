package admin

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
)

// Alerts raised while nobody subscribes to the alerts feed are kept: a
// page that subscribes later gets them in its first alerts message.
func TestAlertsKeptWhileUnwatched(t *testing.T) {
	lim := config.Default().Limits
	lim.MaxQueued = 2
	b, addr := startBrokerLimits(t, lim)
	f := New(b, Options{}).feed

	// An offline session whose queue overflows.
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	slow := paho.NewClient(paho.ClientConfig{Conn: nc})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	exp := uint32(300)
	if _, err := slow.Connect(ctx, &paho.Connect{ClientID: "slow", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "hot/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	slow.Disconnect(&paho.Disconnect{})
	nc.Close()
	<-slow.Done()
	for deadline := time.Now().Add(5 * time.Second); b.Stats.Connections.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("slow still connected")
		}
	}

	t0 := time.Now()
	if err := f.tick(t0); err != nil { // the baseline
		t.Fatal(err)
	}
	pub := dial(t, addr, "pub")
	for range 10 {
		pub.publish(t, "hot/1", "x", false)
	}
	if err := f.tick(t0.Add(time.Second)); err != nil { // nobody watches
		t.Fatal(err)
	}
	if b.Subscribed(FeedAlerts) {
		t.Fatal("someone subscribes to the alerts feed")
	}

	page := dial(t, addr, "page")
	page.subscribe(t, FeedAlerts)
	if err := f.tick(t0.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var al AlertsFeed
	nextJSON(t, page, FeedAlerts, &al)
	if len(al.Alerts) != 1 || al.Alerts[0].Kind != "dropped" || al.Alerts[0].ClientID != "slow" || al.Alerts[0].Count != 8 ||
		al.Alerts[0].Time != t0.Add(time.Second).UnixMilli() {
		t.Errorf("alerts seen by a late page: %+v (want slow dropped 8 at the second tick)", al.Alerts)
	}
}

// The feed keeps the last maxAlerts alerts, newest first, in bounded memory.
func TestAlertsBounded(t *testing.T) {
	b, _ := startBroker(t)
	f := New(b, Options{}).feed
	t0 := time.Now()
	const ticks = 3 * maxAlerts
	for i := range ticks {
		// Two clients drop one more delivery each tick: two alerts a tick.
		f.checkAlerts(t0.Add(time.Duration(i)*time.Second), []broker.ClientTraffic{
			{ClientID: "a", DroppedQueue: uint64(i)}, {ClientID: "b", DroppedExp: uint64(i)}})
		if len(f.alerts) > maxAlerts || cap(f.alerts) > maxAlerts {
			t.Fatalf("tick %d: %d alerts held, capacity %d; want at most %d", i, len(f.alerts), cap(f.alerts), maxAlerts)
		}
	}
	if len(f.alerts) != maxAlerts {
		t.Fatalf("%d alerts kept, want %d", len(f.alerts), maxAlerts)
	}
	last := t0.Add((ticks - 1) * time.Second).UnixMilli()
	for i, a := range f.alerts {
		if want := last - int64(i/2)*1000; a.Time != want || a.Kind != "dropped" || a.Count != 1 {
			t.Fatalf("alert %d: %+v, want a drop of 1 at %d (newest first)", i, a, want)
		}
	}
}
