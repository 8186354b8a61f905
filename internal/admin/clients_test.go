package admin

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/testcert"
)

// The client list shows how each client came in: TLS (version and the
// client certificate's name), keep alive, and its dropped deliveries; the
// clients feed carries the same.
func TestClientsTLSKeepAliveDropped(t *testing.T) {
	b, addr := startBroker(t)
	a := New(b, Options{Checker: StaticChecker{"admin", "s3cret"}})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	pki := testcert.NewPKI(t)
	nc := pki.Dial(pki.Serve(func(c net.Conn) { b.HandleConn(c) }), "device-7")
	sec := paho.NewClient(paho.ClientConfig{ClientID: "secure", Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sec.Connect(ctx, &paho.Connect{ClientID: "secure", CleanStart: true, KeepAlive: 45}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sec.Disconnect(&paho.Disconnect{}); nc.Close(); <-sec.Done() })

	// A plain client that accepts packets of at most 64 bytes: a larger
	// message to it is dropped (too large).
	small := paho.NewClient(paho.ClientConfig{ClientID: "small", Conn: dialTCP(t, addr)})
	maxSize := uint32(64)
	if _, err := small.Connect(ctx, &paho.Connect{ClientID: "small", CleanStart: true, KeepAlive: 20,
		Properties: &paho.ConnectProperties{MaximumPacketSize: &maxSize}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { small.Disconnect(&paho.Disconnect{}); <-small.Done() })
	if _, err := small.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "big/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pub := dial(t, addr, "pub")
	pub.publish(t, "big/1", strings.Repeat("x", 200), false)

	var list struct{ Clients []Client }
	_, body, _ := do(t, srv, "GET", "/api/v1/clients", creds, "")
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	got := map[string]Client{}
	for _, c := range list.Clients {
		got[c.ClientID] = c
	}
	if c := got["secure"]; !c.TLS || c.TLSVersion != "TLS 1.3" || c.ClientCert != "device-7" || c.KeepAlive != 45 {
		t.Errorf("TLS client: %+v", c)
	}
	if c := got["small"]; c.TLS || c.TLSVersion != "" || c.ClientCert != "" || c.KeepAlive != 20 || c.Dropped.TooLarge != 1 {
		t.Errorf("plain client: %+v", c)
	}
	if !strings.Contains(body, `"keep_alive": 45`) || !strings.Contains(body, `"tls": true`) || !strings.Contains(body, `"tls_version": "TLS 1.3"`) ||
		!strings.Contains(body, `"client_cert": "device-7"`) || !strings.Contains(body, `"too_large": 1`) {
		t.Errorf("JSON names: %s", body)
	}
	code, body, _ := do(t, srv, "GET", "/api/v1/clients/secure", creds, "")
	var one Client
	if err := json.Unmarshal([]byte(body), &one); code != 200 || err != nil || !one.TLS || one.KeepAlive != 45 {
		t.Errorf("one client: %d %v %s", code, err, body)
	}

	// The clients feed.
	watcher := dial(t, addr, "watcher")
	watcher.subscribe(t, "$SYS/starling/dashboard/#")
	if err := a.feed.tick(time.Now()); err != nil {
		t.Fatal(err)
	}
	var feed ClientsFeed
	if err := json.Unmarshal(watcher.next(t, FeedClients).Payload, &feed); err != nil {
		t.Fatal(err)
	}
	fc := map[string]FeedClient{}
	for _, c := range feed.Connected {
		fc[c.ClientID] = c
	}
	if c := fc["secure"]; !c.TLS || c.TLSVersion != "TLS 1.3" || c.ClientCert != "device-7" || c.KeepAlive != 45 {
		t.Errorf("feed TLS client: %+v", c)
	}
	if c := fc["small"]; c.TLS || c.KeepAlive != 20 || c.Dropped.TooLarge != 1 {
		t.Errorf("feed plain client: %+v", c)
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// The topics feed carries each topic's messages and bytes per second over
// the last interval, computed in the broker; only while someone watches it.
func TestTopicsFeed(t *testing.T) {
	b, addr := startBroker(t)
	f := New(b, Options{}).feed
	t0 := time.Now()
	if err := f.tick(t0); err != nil {
		t.Fatal(err)
	}
	if f.topOn {
		t.Fatal("topic sampling on with nobody watching")
	}
	page := dial(t, addr, "page")
	page.subscribe(t, FeedTopics)
	if err := f.tick(t0.Add(time.Second)); err != nil { // the first reading
		t.Fatal(err)
	}
	pub := dial(t, addr, "pub")
	for range 10 {
		pub.publish(t, "plant/a/temp", "0123456789", false)
	}
	for range 4 {
		pub.publish(t, "plant/b/temp", "01234", true)
	}
	if err := f.tick(t0.Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var tf TopicsFeed
	nextJSON(t, page, FeedTopics, &tf)
	if tf.Seconds != 2 || tf.Truncated || tf.Other != nil || len(tf.Topics) != 2 {
		t.Fatalf("topics feed: %+v", tf)
	}
	if a := tf.Topics[0]; a.Topic != "plant/a/temp" || a.Messages != 5 || a.Bytes != 50 {
		t.Errorf("busiest topic: %+v", a)
	}
	if b := tf.Topics[1]; b.Topic != "plant/b/temp" || b.Messages != 2 || b.Bytes != 10 {
		t.Errorf("second topic: %+v", b)
	}
	// A quiet interval: no topics.
	if err := f.tick(t0.Add(4 * time.Second)); err != nil {
		t.Fatal(err)
	}
	nextJSON(t, page, FeedTopics, &tf)
	if len(tf.Topics) != 0 || tf.Seconds != 1 {
		t.Errorf("quiet interval: %+v", tf)
	}
}

// The first endpoints without credentials (none or wrong): 401 and no
// effect (no kick, no publish, no delete); 403 with the API disabled; with
// credentials they work.
func TestEndpointsCredentials(t *testing.T) {
	_, off, _ := serve(t, Options{})
	_, on, addr := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	victim := dial(t, addr, "victim")
	watcher := dial(t, addr, "watcher")
	watcher.subscribe(t, "auth/#")
	victim.publish(t, "auth/kept", "retained", true)
	watcher.next(t, "auth/kept")

	eps := []struct{ method, path, body string }{
		{"GET", "/api/v1/clients/victim", ""},
		{"POST", "/api/v1/clients/victim/kick", ""},
		{"POST", "/api/v1/publish", `{"topic":"auth/pub","payload":"p"}`},
		{"GET", "/api/v1/retained?filter=auth/%23", ""},
		{"DELETE", "/api/v1/retained/auth/kept", ""},
		{"GET", "/api/v1/stats", ""},
		{"GET", "/api/v1/cluster", ""},
	}
	for _, e := range eps {
		if code, _, _ := do(t, off, e.method, e.path, creds, e.body); code != 403 {
			t.Errorf("%s %s with the API disabled: %d, want 403", e.method, e.path, code)
		}
		for _, c := range []string{"", "admin:nope", "nobody:s3cret"} {
			if code, body, h := do(t, on, e.method, e.path, c, e.body); code != 401 || h.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %q: %d %s, want 401 and a challenge", e.method, e.path, c, code, body)
			}
		}
	}
	// Nothing happened: the victim is connected, nothing was published,
	// the retained message is there.
	select {
	case p := <-watcher.Recv:
		t.Errorf("watcher got %s %q after refused requests", p.Topic, p.Payload)
	case d := <-victim.Disc:
		t.Errorf("victim disconnected by a refused kick: %+v", d)
	case <-time.After(200 * time.Millisecond):
	}
	if _, body, _ := do(t, on, "GET", "/api/v1/clients/victim", creds, ""); !strings.Contains(body, `"connected": true`) {
		t.Errorf("victim after a refused kick: %s", body)
	}

	// With credentials, each works.
	want := []string{`"client_id": "victim"`, `"kicked": true`, `"delivered": 1`, `"topic": "auth/kept"`,
		`"deleted": "auth/kept"`, `"clients_connected"`, `"enabled": false`}
	for i, e := range eps {
		code, body, _ := do(t, on, e.method, e.path, creds, e.body)
		if code != 200 || !strings.Contains(body, want[i]) {
			t.Errorf("%s %s with credentials: %d %s, want 200 and %s", e.method, e.path, code, body, want[i])
		}
	}
	if p := watcher.next(t, "auth/"); p.Topic != "auth/pub" {
		t.Errorf("watcher got %s first, want the published auth/pub", p.Topic)
	}
	if p := watcher.next(t, "auth/"); p.Topic != "auth/kept" || len(p.Payload) != 0 {
		t.Errorf("watcher got %s %q, want the delete of auth/kept", p.Topic, p.Payload)
	}
	select {
	case <-victim.Disc:
	case <-time.After(5 * time.Second):
		t.Error("victim not disconnected by the kick")
	}
}
