package admin

import (
	"context"
	"fmt"
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

	// An offline session that will overflow its queue.
	offlineSubscriber(t, b, addr, "slow", "hot/#", 0)

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

// The feed keeps at most maxAlerts alert groups, the most recently raised
// first, in bounded memory: a new client's alert pushes out the group
// raised longest ago.
func TestAlertsBounded(t *testing.T) {
	b, _ := startBroker(t)
	f := New(b, Options{}).feed
	t0 := time.Now()
	const ticks = 3 * maxAlerts
	f.checkAlerts(t0, nil) // the baseline
	for i := 1; i <= ticks; i++ {
		// A new client each tick, with one dropped delivery.
		f.checkAlerts(t0.Add(time.Duration(i)*time.Second), []broker.ClientTraffic{{ClientID: fmt.Sprint("c", i), DroppedQueue: 1}})
		if len(f.alerts) > maxAlerts || cap(f.alerts) > maxAlerts {
			t.Fatalf("tick %d: %d alerts held, capacity %d; want at most %d", i, len(f.alerts), cap(f.alerts), maxAlerts)
		}
	}
	if len(f.alerts) != maxAlerts {
		t.Fatalf("%d alerts kept, want %d", len(f.alerts), maxAlerts)
	}
	for i, a := range f.alerts {
		at := t0.Add(time.Duration(ticks-i) * time.Second).UnixMilli()
		if a.ClientID != fmt.Sprint("c", ticks-i) || a.Time != at || a.First != at || a.Times != 1 || a.Kind != "dropped" || a.Count != 1 {
			t.Fatalf("alert %d: %+v, want c%d's drop of 1 at %d (newest first)", i, a, ticks-i, at)
		}
	}
}

// One client that drops a delivery every tick takes one slot, with the
// count, the times raised and the first and last time; it does not push
// out another client's slow-consumer alert.
func TestAlertsGroupedPerClient(t *testing.T) {
	b, _ := startBroker(t)
	f := New(b, Options{}).feed
	t0 := time.Now()
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	const ticks = 3 * maxAlerts
	for i := 0; i <= ticks; i++ {
		var held time.Duration
		if i >= 5 {
			held = time.Second // held publishers back once, at tick 5
		}
		f.checkAlerts(at(i), []broker.ClientTraffic{
			{ClientID: "tiny", Connected: true, Window: 20, DroppedTooLarge: uint64(2 * i)},
			{ClientID: "slow", Connected: true, Window: 20, Flow: broker.ClientFlow{HeldFor: held}},
		})
	}
	if len(f.alerts) != 2 {
		t.Fatalf("%d alerts, want 2 (one per client and kind): %+v", len(f.alerts), f.alerts)
	}
	tiny, slow := f.alerts[0], f.alerts[1]
	if tiny.ClientID != "tiny" || tiny.Kind != "dropped" || tiny.Times != ticks || tiny.Count != 2*ticks ||
		tiny.First != at(1).UnixMilli() || tiny.Time != at(ticks).UnixMilli() ||
		tiny.Detail != fmt.Sprintf("2 deliveries dropped (so far: queue full 0, expired 0, too large %d)", 2*ticks) {
		t.Errorf("tiny's alert: %+v, want dropped %d times, %d in all, from tick 1 to %d", tiny, ticks, 2*ticks, ticks)
	}
	if slow.ClientID != "slow" || slow.Kind != "slow_consumer" || slow.Times != 1 || slow.First != at(5).UnixMilli() ||
		slow.Time != slow.First {
		t.Errorf("slow's alert: %+v, want one slow_consumer at tick 5", slow)
	}
}

// waitFor polls cond until it holds or the test's context ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: never happened", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A v5 subscriber with Receive Maximum 20 that stops reading: its own
// window (20), not max_inflight (256), is what makes it slow. The alert
// comes within two ticks of the window filling, and names the window.
func TestSlowConsumerAlertReceiveMaximum(t *testing.T) {
	b, addr := startBroker(t) // max_inflight 256, max_queued 1000
	f := New(b, Options{}).feed
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lag := paho.NewClient(paho.ClientConfig{Conn: nc, EnableManualAcknowledgment: true}) // acknowledges nothing
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	rm := uint16(20)
	if _, err := lag.Connect(ctx, &paho.Connect{ClientID: "stopped", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm}}); err != nil {
		t.Fatal(err)
	}
	defer func() { nc.Close(); <-lag.Done() }()
	if _, err := lag.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "work/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	f.checkAlerts(t0, b.Traffics()) // the baseline
	pub := dial(t, addr, "pub")
	for range 25 {
		pub.publish(t, "work/1", "job", false)
	}
	waitFor(t, "20 inflight and 5 queued", func() bool {
		s, _ := b.Client("stopped")
		return s.Inflight == 20 && s.Queued == 5
	})
	s, _ := b.Client("stopped")
	if c := toClient(s); c.Window != 20 || c.ReceiveMax != 20 {
		t.Errorf("API client: window %d, receive maximum %d; want 20 and 20", c.Window, c.ReceiveMax)
	}
	for i := 1; i <= 2; i++ {
		// As a tick with no dashboard watching: one client at a time.
		f.checkAlertsIn(t0.Add(time.Duration(i)*time.Second), b.AllTraffic())
	}
	if len(f.alerts) != 1 || f.alerts[0].Kind != "slow_consumer" || f.alerts[0].ClientID != "stopped" ||
		f.alerts[0].Detail != "inflight 20 of its window 20, queued 5 of 1000" {
		t.Fatalf("alerts after two ticks with the window full: %+v", f.alerts)
	}
}

// With flow control, a client that holds publishers back or meets the
// slow-consumer policy is a slow consumer at the next tick, whatever its
// window and queue; the alert names the figures.
func TestSlowConsumerAlertFlow(t *testing.T) {
	b, _ := startBroker(t)
	f := New(b, Options{}).feed
	t0 := time.Now()
	tick := func(i int, held time.Duration, actions uint64) {
		f.checkAlerts(t0.Add(time.Duration(i)*time.Second), []broker.ClientTraffic{
			{ClientID: "holder", Connected: true, Window: 20, Inflight: 3, Flow: broker.ClientFlow{HeldFor: held}},
			{ClientID: "shed", Connected: true, Window: 20, Flow: broker.ClientFlow{PolicyActions: actions, Shedding: actions > 0}},
			{ClientID: "calm", Connected: true, Window: 20, Inflight: 19},
		})
	}
	tick(0, 0, 0)
	tick(1, 0, 0)
	if len(f.alerts) != 0 {
		t.Fatalf("alerts before any flow action: %+v", f.alerts)
	}
	tick(2, 2500*time.Millisecond, 3)
	want := map[string]string{
		"holder": "inflight 3 of its window 20, queued 0 of 1000; held publishers back 2.5 s since the last check (2.5 s in all)",
		"shed":   "inflight 0 of its window 20, queued 0 of 1000; slow-consumer policy acted 3 times (3 in all); shedding",
	}
	if len(f.alerts) != len(want) {
		t.Fatalf("alerts: %+v, want one for each of %v", f.alerts, want)
	}
	for _, a := range f.alerts {
		if a.Kind != "slow_consumer" || a.Detail != want[a.ClientID] {
			t.Errorf("alert %+v, want slow_consumer %q", a, want[a.ClientID])
		}
	}
}

// At the first tick (no baseline yet) a half-full queue is already a slow
// consumer, but flow control's earlier holds are not news.
func TestSlowConsumerAlertFirstTick(t *testing.T) {
	b, _ := startBroker(t)
	f := New(b, Options{}).feed
	f.checkAlerts(time.Now(), []broker.ClientTraffic{
		{ClientID: "q", Connected: true, Window: 20, Queued: 600, Flow: broker.ClientFlow{HeldFor: 5 * time.Second}},
		{ClientID: "h", Connected: true, Window: 20, Inflight: 20, Flow: broker.ClientFlow{HeldFor: 5 * time.Second}},
	})
	if len(f.alerts) != 1 || f.alerts[0].ClientID != "q" || f.alerts[0].Detail != "inflight 0 of its window 20, queued 600 of 1000" {
		t.Errorf("alerts at the first tick: %+v, want q's half-full queue only", f.alerts)
	}
}

// Refused WebSocket upgrades and logins become alerts, one group per kind,
// raised at each tick their count grew.
func TestRefusalAlerts(t *testing.T) {
	b, _ := startBroker(t)
	var ws, login uint64
	f := New(b, Options{Refusals: func() []Refusal {
		return []Refusal{{Kind: "ws_refused", Count: ws, Detail: fmt.Sprintf("%d upgrades refused", ws)},
			{Kind: "auth_refused", Count: login, Detail: "login"}}
	}}).feed
	t0 := time.Now()
	ws = 2 // before the first tick: still news
	if err := f.tick(t0); err != nil {
		t.Fatal(err)
	}
	if len(f.alerts) != 1 || f.alerts[0].Kind != "ws_refused" || f.alerts[0].Count != 2 || f.alerts[0].Detail != "2 upgrades refused" {
		t.Fatalf("alerts %+v, want one ws_refused of 2", f.alerts)
	}
	if err := f.tick(t0.Add(time.Second)); err != nil { // nothing new
		t.Fatal(err)
	}
	if len(f.alerts) != 1 || f.alerts[0].Times != 1 {
		t.Fatalf("alerts %+v, want the same one, raised once", f.alerts)
	}
	ws, login = 5, 1
	if err := f.tick(t0.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got := map[string]Alert{}
	for _, a := range f.alerts {
		got[a.Kind] = a
	}
	if a := got["ws_refused"]; a.Count != 5 || a.Times != 2 || a.Detail != "5 upgrades refused" {
		t.Fatalf("ws_refused %+v, want 5 in all, raised twice", a)
	}
	if a := got["auth_refused"]; a.Count != 1 || a.Times != 1 {
		t.Fatalf("auth_refused %+v", a)
	}
}

// The feed keeps a mark between ticks only for clients with something to
// compare (drops, flow control, a full window): idle clients cost it
// nothing between ticks.
func TestAlertMarksOnlyActiveClients(t *testing.T) {
	b, _ := startBroker(t)
	f := New(b, Options{}).feed
	t0 := time.Now()
	ts := []broker.ClientTraffic{
		{ClientID: "idle1", Connected: true, Window: 20, MessagesOut: 7},
		{ClientID: "idle2", Connected: true, Window: 20},
		{ClientID: "offline"},
		{ClientID: "dropper", Connected: true, Window: 20, DroppedQueue: 1},
		{ClientID: "full", Connected: true, Window: 2, Inflight: 2},
	}
	f.checkAlerts(t0, ts)
	if len(f.marks) != 2 {
		t.Fatalf("marks kept for %v, want dropper and full only", f.marks)
	}
	if _, ok := f.marks["dropper"]; !ok {
		t.Fatal("no mark for a client with drops")
	}
	if _, ok := f.marks["full"]; !ok {
		t.Fatal("no mark for a client with a full window")
	}
}
