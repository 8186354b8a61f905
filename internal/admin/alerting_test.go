package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
)

// check runs one alert check at now, as a feed tick does.
func check(a *Admin, now time.Time) {
	a.feed.mu.Lock()
	defer a.feed.mu.Unlock()
	a.feed.checkAlerts(now, a.b.Traffics())
}

func alertOf(a *Admin, kind string) (Alert, bool) {
	a.feed.mu.Lock()
	defer a.feed.mu.Unlock()
	for _, x := range a.feed.alerts {
		if x.Kind == kind {
			return x, true
		}
	}
	return Alert{}, false
}

// Thresholds from the config: connections and refused logins raise
// alerts over theirs, drops only above theirs; a new alert goes to the
// webhook (a loopback HTTP server) as JSON; an acknowledged one stays so
// while it keeps being raised, and is new again (and posted again) when
// it comes back after stopping.
func TestAlertThresholdsAckWebhook(t *testing.T) {
	posts := make(chan WebhookPayload, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p WebhookPayload
		body, _ := io.ReadAll(r.Body)
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &p) != nil {
			t.Errorf("webhook got %s %s %s", r.Method, r.Header.Get("Content-Type"), body)
		}
		posts <- p
	}))
	t.Cleanup(hook.Close)
	b, addr := startBroker(t)
	a := New(b, Options{Checker: StaticChecker{"admin", "s3cret"}, Version: "v-test",
		Alerts: &AlertOptions{MaxConnections: 1, DroppedPerSecond: 1000, RefusedPerMinute: 2, WebhookURL: hook.URL, WebhookTimeout: 5 * time.Second}})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go a.feed.hook.run(ctx)

	now := time.Now()
	check(a, now) // the baseline
	// Two clients: over max_connections 1.
	dial(t, addr, "other")
	pub := dial(t, addr, "pub")
	for range 3 {
		a.RecordEvent(broker.Event{Kind: broker.EventConnectRefused, ClientID: "x", Reason: "0x86"})
	}
	now = now.Add(time.Second)
	check(a, now)
	conn, ok := alertOf(a, "connections")
	if !ok || !strings.Contains(conn.Detail, "over alerts.max_connections 1") {
		t.Fatalf("no connections alert: %+v", conn)
	}
	if r, ok := alertOf(a, "refused_logins"); !ok || !strings.Contains(r.Detail, "3 logins refused in the last minute") {
		t.Errorf("refused logins: %+v %v", r, ok)
	}
	got := map[string]WebhookPayload{}
	for len(got) < 2 {
		select {
		case p := <-posts:
			got[p.Alert.Kind] = p
		case <-t.Context().Done():
			t.Fatalf("webhook posts: %v", got)
		}
	}
	if p := got["connections"]; p.Version != "v-test" || p.Alert.Times != 1 || p.Alert.First == 0 {
		t.Errorf("webhook payload: %+v", p)
	}
	_ = pub

	// Acknowledged over the API; raised again at the next tick, it stays
	// acknowledged and is not posted again.
	code, body, _ := do(t, srv, "POST", "/api/v1/alerts/ack", creds, `{"kind":"connections"}`)
	if code != 200 || !strings.Contains(body, `"acknowledged": 1`) {
		t.Fatalf("ack: %d %s", code, body)
	}
	now = now.Add(time.Second)
	check(a, now)
	if c, _ := alertOf(a, "connections"); !c.Acked || c.Times != 2 {
		t.Errorf("after ack and another raise: %+v", c)
	}
	_, body, _ = do(t, srv, "GET", "/api/v1/alerts", creds, "")
	if !strings.Contains(body, `"acked": true`) {
		t.Errorf("GET alerts: %s", body)
	}
	// It stops (one client left), then comes back: new again, and posted.
	pub.close()
	waitFor(t, "one client", func() bool { return a.src.Counters().Connected == 1 })
	now = now.Add(5 * time.Second)
	check(a, now)
	dial(t, addr, "pub2")
	now = now.Add(time.Second)
	check(a, now)
	if c, _ := alertOf(a, "connections"); c.Acked {
		t.Errorf("came back after stopping, still acknowledged: %+v", c)
	}
	for posted := false; !posted; {
		select {
		case p := <-posts:
			posted = p.Alert.Kind == "connections" && p.Alert.Times == 3 // the refused logins came back too
		case <-t.Context().Done():
			t.Fatal("the returning alert was not posted")
		}
	}
	if code, _, _ := do(t, srv, "POST", "/api/v1/alerts/ack", creds, `{"client_id":"x"}`); code != 400 {
		t.Errorf("ack with client_id but no kind: %d", code)
	}
	if code, _, _ := do(t, srv, "POST", "/api/v1/alerts/ack", "", `{}`); code != 401 {
		t.Errorf("ack without credentials: %d", code)
	}
}

// A webhook that does not answer is given up after the timeout; alerts
// meanwhile wait in a bounded queue, and past it are dropped, never
// blocking the broker.
func TestAlertWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); hook.Close() })
	w := newWebhook(AlertOptions{WebhookURL: hook.URL, WebhookTimeout: 100 * time.Millisecond}, slog.New(slog.DiscardHandler))
	start := time.Now()
	err := w.post(t.Context(), WebhookPayload{Alert: Alert{Kind: "dropped"}})
	if err == nil || !strings.Contains(err.Error(), "Timeout") {
		t.Errorf("post to a silent webhook: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("gave up after %v, before the timeout", d)
	}
	for range maxWebhookQueue + 5 { // nobody takes them: the queue fills, then drops
		w.send(WebhookPayload{Alert: Alert{Kind: "dropped"}})
	}
	if w.dropped != 5 {
		t.Errorf("dropped %d past the queue, want 5", w.dropped)
	}
}

// alerts.dropped_per_second: drops at or under the rate raise nothing;
// with the default (0) any drop does.
func TestAlertDroppedThreshold(t *testing.T) {
	lim := config.Default().Limits
	lim.MaxQueued = 2
	b, addr := startBrokerLimits(t, lim)
	strict := New(b, Options{})
	lenient := New(b, Options{Alerts: &AlertOptions{QueueFraction: 0.5, DroppedPerSecond: 100}})
	now := time.Now()
	check(strict, now)
	check(lenient, now)
	// An offline session with room for two: five messages drop three.
	exp := uint32(300)
	nc := dialTCP(t, addr)
	s := paho.NewClient(paho.ClientConfig{ClientID: "sleeper", Conn: nc})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.Connect(ctx, &paho.Connect{ClientID: "sleeper", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "nap/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	s.Disconnect(&paho.Disconnect{})
	waitFor(t, "sleeper offline", func() bool { c, ok := b.Client("sleeper"); return ok && !c.Connected })
	pub := dial(t, addr, "pub")
	for range 5 {
		pub.publish(t, "nap/1", "z", false)
	}
	waitFor(t, "three drops", func() bool { c, _ := b.Client("sleeper"); return c.DroppedQueue == 3 })
	now = now.Add(time.Second)
	check(strict, now)
	check(lenient, now)
	if a, ok := alertOf(strict, "dropped"); !ok || a.ClientID != "sleeper" || a.Count != 3 {
		t.Errorf("default threshold: %+v %v", a, ok)
	}
	if a, ok := alertOf(lenient, "dropped"); ok {
		t.Errorf("3 drops in a second, under dropped_per_second 100, raised %+v", a)
	}
}
