package admin

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/config"
)

// nextJSON decodes the next message on topic into v.
func nextJSON(t *testing.T, c *client, topic string, v any) {
	t.Helper()
	p := c.next(t, topic)
	if err := json.Unmarshal(p.Payload, v); err != nil {
		t.Fatalf("%s: %v: %s", topic, err, p.Payload)
	}
}

func TestPublishProperties(t *testing.T) {
	_, srv, addr := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	sub := dial(t, addr, "sub")
	sub.subscribe(t, "req/#")
	body := `{"topic":"req/1","payload":"{\"a\":1}","qos":1,"content_type":"application/json","response_topic":"resp/1",
		"correlation_data":"c-42","user_properties":[{"key":"k","value":"v"},{"key":"k","value":"w"}],
		"payload_format":1,"message_expiry_interval":120}`
	if code, resp, _ := do(t, srv, "POST", "/api/v1/publish", creds, body); code != 200 || !strings.Contains(resp, `"delivered": 1`) {
		t.Fatalf("publish: %d %s", code, resp)
	}
	p := sub.next(t, "req/")
	pr := p.Properties
	if pr == nil || pr.ContentType != "application/json" || pr.ResponseTopic != "resp/1" || string(pr.CorrelationData) != "c-42" ||
		pr.PayloadFormat == nil || *pr.PayloadFormat != 1 || pr.MessageExpiry == nil || *pr.MessageExpiry == 0 || *pr.MessageExpiry > 120 {
		t.Errorf("properties received: %+v", pr)
	}
	if pr != nil && (len(pr.User) != 2 || pr.User[0].Key != "k" || pr.User[0].Value != "v" || pr.User[1].Value != "w") {
		t.Errorf("user properties: %+v", pr.User)
	}
	for _, bad := range []string{
		`{"topic":"req/2","response_topic":"resp/#"}`,
		`{"topic":"req/2","payload_format":2}`,
		`{"topic":"req/2","payload_base64":"/w==","payload_format":1}`,
		`{"topic":"req/2","correlation_data":"a","correlation_data_base64":"YQ=="}`,
		`{"topic":"req/2","correlation_data_base64":"%%"}`,
	} {
		if code, resp, _ := do(t, srv, "POST", "/api/v1/publish", creds, bad); code != 400 {
			t.Errorf("publish %s: %d %s, want 400", bad, code, resp)
		}
	}
}

func TestReceiversAndShared(t *testing.T) {
	_, srv, addr := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	dial(t, addr, "plain").subscribe(t, "s/+/t")
	dial(t, addr, "m1").subscribe(t, "$share/g/s/#")
	dial(t, addr, "m2").subscribe(t, "$share/g/s/#")
	dial(t, addr, "elsewhere").subscribe(t, "other/#")

	code, body, _ := do(t, srv, "GET", "/api/v1/receivers?topic=s/1/t", creds, "")
	var rr struct {
		Receivers  []Receiver `json:"receivers"`
		Deliveries int        `json:"deliveries"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &rr) != nil {
		t.Fatalf("receivers: %d %s", code, body)
	}
	var got []string
	for _, r := range rr.Receivers {
		got = append(got, r.Group+"|"+r.ClientID+"|"+r.Filter)
		if !r.Connected || !r.Allowed {
			t.Errorf("receiver %+v: want connected and allowed", r)
		}
	}
	if strings.Join(got, " ") != "|plain|s/+/t g|m1|s/# g|m2|s/#" || rr.Deliveries != 2 {
		t.Errorf("receivers of s/1/t: %v, deliveries %d; want plain and both members of g, 2 deliveries", got, rr.Deliveries)
	}
	if _, body, _ := do(t, srv, "GET", "/api/v1/receivers?topic=none/here", creds, ""); !strings.Contains(body, `"receivers": []`) {
		t.Errorf("receivers of an unsubscribed topic: %s", body)
	}
	for _, bad := range []string{"", "s/%2B", "s/%23"} {
		if code, _, _ := do(t, srv, "GET", "/api/v1/receivers?topic="+bad, creds, ""); code != 400 {
			t.Errorf("receivers?topic=%s: %d, want 400", bad, code)
		}
	}

	code, body, _ = do(t, srv, "GET", "/api/v1/shared", creds, "")
	var sg struct{ Groups []ShareGroup }
	if code != 200 || json.Unmarshal([]byte(body), &sg) != nil || len(sg.Groups) != 1 {
		t.Fatalf("shared: %d %s", code, body)
	}
	if g := sg.Groups[0]; g.Group != "g" || g.Filter != "s/#" || len(g.Members) != 2 || g.Members[0].ClientID != "m1" || g.Members[1].ClientID != "m2" {
		t.Errorf("shared group: %+v", g)
	}
}

// The subscriber count of a topic is the number of subscriptions whose
// filter matches it, $share members included, with the asking client's
// own left out.
func TestSubscribers(t *testing.T) {
	_, srv, addr := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	dial(t, addr, "plain").subscribe(t, "s/+/t")
	dial(t, addr, "m1").subscribe(t, "$share/g/s/#")
	dial(t, addr, "m2").subscribe(t, "$share/g/s/#")
	dial(t, addr, "exact").subscribe(t, "s/1/t")
	page := dial(t, addr, "page")
	page.subscribe(t, "#")
	page.subscribe(t, "$SYS/#")

	code, body, _ := do(t, srv, "POST", "/api/v1/subscribers", creds,
		`{"topics":["s/1/t","s/2/t","s","other","$SYS/x","bad/#",""],"except_client":"page"}`)
	var got struct{ Subscribers map[string]int }
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil {
		t.Fatalf("subscribers: %d %s", code, body)
	}
	want := map[string]int{"s/1/t": 4, "s/2/t": 3, "s": 2, "other": 0, "$SYS/x": 0}
	if len(got.Subscribers) != len(want) {
		t.Errorf("subscribers: %v, want %v (invalid names left out)", got.Subscribers, want)
	}
	for k, v := range want {
		if n, ok := got.Subscribers[k]; !ok || n != v {
			t.Errorf("subscribers of %q: %d (present %v), want %d", k, n, ok, v)
		}
	}
	// Without except_client the page's own subscriptions count too.
	if _, body, _ := do(t, srv, "POST", "/api/v1/subscribers", creds, `{"topics":["s/1/t","$SYS/x"]}`); !strings.Contains(body, `"s/1/t": 5`) ||
		!strings.Contains(body, `"$SYS/x": 1`) {
		t.Errorf("subscribers with the page's own: %s", body)
	}
	many, _ := json.Marshal(SubscribersRequest{Topics: make([]string, maxCountTopics+1)})
	if code, body, _ := do(t, srv, "POST", "/api/v1/subscribers", creds, string(many)); code != 400 {
		t.Errorf("%d topics: %d %s, want 400", maxCountTopics+1, code, body)
	}
}

// Every new endpoint answers 401 without credentials and 403 with the API
// disabled; a good request passes.
func TestNewEndpointsCredentials(t *testing.T) {
	eps := []struct{ method, path, body string }{
		{"GET", "/api/v1/receivers?topic=a", ""},
		{"GET", "/api/v1/shared", ""},
		{"POST", "/api/v1/subscribers", `{"topics":["a"]}`},
		{"GET", "/api/v1/trace", ""},
		{"POST", "/api/v1/trace", `{"topic":"a/#"}`},
		{"DELETE", "/api/v1/trace", ""},
		{"GET", "/api/v1/log-level", ""},
		{"PUT", "/api/v1/log-level", `{"level":"info"}`},
	}
	_, off, _ := serve(t, Options{})
	a, on, _ := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}, LogLevel: new(slog.LevelVar)})
	for _, e := range eps {
		if code, _, _ := do(t, off, e.method, e.path, creds, e.body); code != 403 {
			t.Errorf("%s %s with the API disabled: %d, want 403", e.method, e.path, code)
		}
		for _, c := range []string{"", "admin:nope"} {
			if code, _, _ := do(t, on, e.method, e.path, c, e.body); code != 401 {
				t.Errorf("%s %s with %q: %d, want 401", e.method, e.path, c, code)
			}
		}
		if code, body, _ := do(t, on, e.method, e.path, creds, e.body); code != 200 {
			t.Errorf("%s %s with credentials: %d %s", e.method, e.path, code, body)
		}
	}
	if a.feed.b.CurrentTrace() != nil {
		t.Error("trace still running after DELETE")
	}
}

func TestTopSessionsAlertsTrace(t *testing.T) {
	lim := config.Default().Limits
	lim.MaxQueued = 2
	b, addr := startBrokerLimits(t, lim)
	a := New(b, Options{Checker: StaticChecker{"admin", "s3cret"}})
	f := a.feed
	page := dial(t, addr, "page")
	page.subscribe(t, "$SYS/starling/dashboard/#")
	dial(t, addr, "worker").subscribe(t, "$share/pool/jobs/#")

	// An offline session that will overflow its queue.
	offlineSubscriber(t, b, addr, "slow", "hot/#", 2)

	t0 := time.Now()
	if err := f.tick(t0); err != nil { // starts topic sampling and the alert baseline
		t.Fatal(err)
	}
	pub := dial(t, addr, "pub")
	for range 10 {
		pub.publish(t, "hot/1", "0123456789", false)
	}
	pub.publish(t, "cold/1", "x", false)
	if err := f.tick(t0.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}

	var top TopFeed
	nextJSON(t, page, FeedTop, &top)
	if len(top.Topics) != 2 || top.Topics[0].Topic != "hot/1" || top.Topics[0].Messages != 5 || top.Topics[0].Bytes != 50 ||
		top.Topics[0].Deliveries != 5 || top.Topics[1].Topic != "cold/1" {
		t.Errorf("top topics: %+v", top.Topics)
	}
	// pub sent 11 messages in 2 s; page received the feeds.
	var pubTop *TopClient
	for i, c := range top.Clients {
		if c.ClientID == "pub" {
			pubTop = &top.Clients[i]
		}
	}
	if pubTop == nil || pubTop.MessagesIn != 5.5 || pubTop.BytesIn != 50.5 {
		t.Errorf("top clients: %+v", top.Clients)
	}

	var ss SessionsFeed
	nextJSON(t, page, FeedSessions, &ss)
	ids := []string{}
	for _, s := range ss.Sessions {
		ids = append(ids, s.ClientID)
	}
	if ss.Total != 4 || strings.Join(ids, ",") != "page,pub,slow,worker" || len(ss.Shared) != 1 || ss.Shared[0].Group != "pool" ||
		ss.Shared[0].Members[0].ClientID != "worker" {
		t.Errorf("sessions feed: %+v", ss)
	}
	for _, s := range ss.Sessions {
		if s.ClientID == "slow" && (s.Connected || s.Expiry != 300 || s.Queued != 2) {
			t.Errorf("slow session: %+v", s)
		}
	}

	var al AlertsFeed
	nextJSON(t, page, FeedAlerts, &al)
	if len(al.Alerts) != 1 || al.Alerts[0].Kind != "dropped" || al.Alerts[0].ClientID != "slow" || al.Alerts[0].Count != 8 {
		t.Errorf("alerts: %+v (want slow dropped 8: 10 messages, a queue of 2)", al.Alerts)
	}

	// A trace of pub's packets, started through the API.
	srv := httpServer(t, a)
	if code, body, _ := do(t, srv, "POST", "/api/v1/trace", creds, `{"client_id":"pub"}`); code != 200 || !strings.Contains(body, `"tracing": true`) {
		t.Fatalf("start trace: %d %s", code, body)
	}
	pub.publish(t, "traced/1", "hello", false)
	dial(t, addr, "bystander").publish(t, "traced/2", "not this one", false)
	if err := f.tick(t0.Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var tf TraceFeed
	nextJSON(t, page, FeedTrace, &tf)
	var seen []string
	for _, e := range tf.Events {
		seen = append(seen, e.Direction+" "+e.Type+" "+e.Topic+" "+e.Payload)
		if e.ClientID != "pub" {
			t.Errorf("traced another client's packet: %+v", e)
		}
	}
	if tf.ClientID != "pub" || !strings.Contains(strings.Join(seen, "|"), "in PUBLISH traced/1 hello") {
		t.Errorf("trace: %+v", seen)
	}

	// Nobody receives the trace feed any more: the next tick stops it.
	page.close()
	for deadline := time.Now().Add(5 * time.Second); b.Subscribed(FeedTrace); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("page's subscription outlived its session")
		}
	}
	if err := f.tick(t0.Add(4 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if b.CurrentTrace() != nil {
		t.Error("trace kept running with nobody watching")
	}
}

func httpServer(t *testing.T, a *Admin) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// Connects and disconnects push the client list before the next tick.
func TestClientsPushedOnChange(t *testing.T) {
	b, addr := startBroker(t)
	a := New(b, Options{FeedInterval: time.Hour, SysInterval: -1})
	page := dial(t, addr, "page")
	page.subscribe(t, FeedClients)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { stop(); <-done }()

	start := time.Now()
	c := dial(t, addr, "newcomer")
	for {
		var cf ClientsFeed
		nextJSON(t, page, FeedClients, &cf)
		found := false
		for _, x := range cf.Connected {
			found = found || x.ClientID == "newcomer"
		}
		if found {
			break
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("client list came %v after the connect", d)
	}
	c.close()
	for {
		var cf ClientsFeed
		nextJSON(t, page, FeedClients, &cf)
		if len(cf.Connected) == 1 && len(cf.Events) > 0 && cf.Events[0].Event == "disconnected" && cf.Events[0].ClientID == "newcomer" {
			break
		}
	}
}

// A connected client that does not acknowledge fills its inflight window
// and its queue: a slow-consumer alert names it, raised again while it
// stays slow.
func TestSlowConsumerAlert(t *testing.T) {
	lim := config.Default().Limits
	lim.MaxInflight = 1
	lim.MaxQueued = 4
	b, addr := startBrokerLimits(t, lim)
	f := New(b, Options{}).feed
	page := dial(t, addr, "page")
	page.subscribe(t, FeedAlerts)

	// A paho client that acknowledges nothing.
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lag := paho.NewClient(paho.ClientConfig{Conn: nc, EnableManualAcknowledgment: true})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := lag.Connect(ctx, &paho.Connect{ClientID: "laggard", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer func() { nc.Close(); <-lag.Done() }()
	if _, err := lag.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "work/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := f.tick(t0); err != nil {
		t.Fatal(err)
	}
	page.next(t, FeedAlerts) // the baseline: no alerts
	pub := dial(t, addr, "pub")
	for range 3 { // one inflight, never acknowledged; two queued
		pub.publish(t, "work/1", "job", false)
	}
	if err := f.tick(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	var al AlertsFeed
	nextJSON(t, page, FeedAlerts, &al)
	if len(al.Alerts) != 1 || al.Alerts[0].Kind != "slow_consumer" || al.Alerts[0].ClientID != "laggard" ||
		al.Alerts[0].Detail != "inflight 1 of its window 1, queued 2 of 4" {
		t.Fatalf("alerts: %+v", al.Alerts)
	}
	// Still slow a second later: the same alert, raised twice.
	if err := f.tick(t0.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	nextJSON(t, page, FeedAlerts, &al)
	if len(al.Alerts) != 1 || al.Alerts[0].Times != 2 || al.Alerts[0].First != t0.Add(time.Second).UnixMilli() ||
		al.Alerts[0].Time != t0.Add(2*time.Second).UnixMilli() {
		t.Errorf("alerts a second later: %+v, want one raised twice", al.Alerts)
	}
}
