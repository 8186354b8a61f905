package browser

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
)

// receiver is a paho.golang MQTT 5 client that queues what it receives.
type receiver struct {
	c    *paho.Client
	recv chan *paho.Publish
}

func dialReceiver(t *testing.T, addr, id string, expiry uint32, filters ...string) *receiver {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, brokertest.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{recv: make(chan *paho.Publish, 100)}
	r.c = paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case r.recv <- pr.Packet:
			default:
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	if _, err := r.c.Connect(ctx, cp); err != nil {
		nc.Close()
		t.Fatalf("connect %s: %v", id, err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { r.c.Disconnect(&paho.Disconnect{}); nc.Close(); <-r.c.Done() }) })
	for _, f := range filters {
		if _, err := r.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}}}); err != nil {
			t.Fatalf("%s subscribe %s: %v", id, f, err)
		}
	}
	return r
}

func (r *receiver) next(t *testing.T, topic string) *paho.Publish {
	t.Helper()
	deadline := time.After(brokertest.Patience(t))
	for {
		select {
		case p := <-r.recv:
			if p.Topic == topic {
				return p
			}
		case <-deadline:
			t.Fatalf("no message on %s within %v", topic, brokertest.Patience(t))
			return nil
		}
	}
}

// shot saves a PNG of one element (a view of the dashboard).
func shot(t *testing.T, ctx context.Context, sel, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("screenshot %s: %v", sel, err)
	}
	saveShot(t, name, png)
}

// saveShot writes a PNG to $SCREENSHOT_DIR, default test/browser/out.
func saveShot(t *testing.T, name string, png []byte) {
	t.Helper()
	dir := os.Getenv("SCREENSHOT_DIR")
	if dir == "" {
		dir = "out"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

func contains(sub string) func(string) bool {
	return func(s string) bool { return strings.Contains(s, sub) }
}

// The views beyond the overview: publish form (received by a real
// client with its MQTT 5 properties), retained browser with delete, top
// topics and clients, sessions and $share groups with the who-receives
// lookup, drop alerts and a packet trace. The page requests nothing but
// its own origin.
func TestDashboardViews(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 1000)
	lim := config.Default().Limits
	lim.MaxQueued = 2 // so that an offline session drops, for the alerts
	srv := startServerLimits(t, lim)

	var mu sync.Mutex
	var requests []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			requests = append(requests, ev.Request.URL)
		case *network.EventWebSocketCreated:
			requests = append(requests, ev.URL)
		}
	}); err != nil {
		t.Fatal(err)
	}

	err := chromedp.Do(ctx,
		signIn(srv.url),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}

	// Publish from the form, with MQTT 5 properties, retained; a real
	// client receives it.
	rcv := dialReceiver(t, srv.tcpAddr, "receiver", 0, "form/#")
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#pub-topic`), "form/cmd"),
		chromedp.SetValue(chromedp.CSS(`#pub-payload`), "hello from the form"),
		chromedp.SetValue(chromedp.CSS(`#pub-qos`), "1"),
		chromedp.SetValue(chromedp.CSS(`#pub-content-type`), "text/plain"),
		chromedp.SetValue(chromedp.CSS(`#pub-response-topic`), "form/reply"),
		chromedp.SetValue(chromedp.CSS(`#pub-correlation`), "req-1"),
		chromedp.SetValue(chromedp.CSS(`#pub-expiry`), "600"),
		chromedp.SetValue(chromedp.CSS(`#pub-user`), "origin=dashboard\nteam = ops"),
		chromedp.Click(chromedp.CSS(`#pub-retain`)),
		chromedp.Click(chromedp.CSS(`#pub-utf8`)),
		chromedp.Click(chromedp.CSS(`#pub-send`)),
		// The receiver and the page itself (its topic tree watches #).
		waitText(`#publish-status`, is("published to form/cmd: 2 sessions")),
	)
	if err != nil {
		t.Fatalf("publish form: %v", err)
	}
	p := rcv.next(t, "form/cmd")
	pr := p.Properties
	if string(p.Payload) != "hello from the form" || p.QoS != 1 || pr == nil || pr.ContentType != "text/plain" ||
		pr.ResponseTopic != "form/reply" || string(pr.CorrelationData) != "req-1" || pr.PayloadFormat == nil || *pr.PayloadFormat != 1 ||
		pr.MessageExpiry == nil || *pr.MessageExpiry == 0 || len(pr.User) != 2 || pr.User[0].Key != "origin" ||
		pr.User[0].Value != "dashboard" || pr.User[1].Key != "team" || pr.User[1].Value != "ops" {
		t.Errorf("received %q qos %d properties %+v", p.Payload, p.QoS, pr)
	}
	shot(t, ctx, `#v-publish`, "view-publish.png")

	// The retained message is in the browser; delete it.
	row := `#retained tr[data-topic="form/cmd"]`
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(row)),
		waitText(row+` td.payload`, is("hello from the form")),
	)
	if err != nil {
		t.Fatalf("retained browser: %v", err)
	}
	shot(t, ctx, `#v-retained`, "view-retained.png")
	err = chromedp.Do(ctx,
		clickLive(row+` button.delete`),
		waitText(`#retained-status`, is("deleted form/cmd")),
		chromedp.WaitNotPresent(chromedp.CSS(row)),
	)
	if err != nil {
		t.Fatalf("delete retained: %v", err)
	}
	if ms, _ := srv.b.RetainedMatching("form/#", 0); len(ms) != 0 {
		t.Errorf("retained after delete: %+v", ms)
	}
	if p := rcv.next(t, "form/cmd"); len(p.Payload) != 0 {
		t.Errorf("subscriber got %q for the delete, want an empty payload", p.Payload)
	}

	// Sessions, $share groups and who would receive jobs/1.
	dialReceiver(t, srv.tcpAddr, "member-1", 0, "$share/workers/jobs/#")
	dialReceiver(t, srv.tcpAddr, "member-2", 0, "$share/workers/jobs/#")
	dialReceiver(t, srv.tcpAddr, "auditor", 0, "jobs/+")
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#shared li[data-group="workers"]`)),
		waitText(`#shared li[data-group="workers"]`, contains("member-1, member-2")),
		chromedp.WaitVisible(chromedp.CSS(`#sessions tr[data-client-id="auditor"]`)),
		chromedp.SetValue(chromedp.CSS(`#lookup-topic`), "jobs/1"),
		chromedp.Click(chromedp.CSS(`#lookup-form button`)),
		// One of the group, the auditor, and the page's own # subscription.
		waitText(`#lookup-status`, is("jobs/1: 3 deliveries (one member per share group)")),
		chromedp.WaitVisible(chromedp.CSS(`#lookup tr[data-client-id="member-1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#lookup tr[data-client-id="member-2"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#lookup tr[data-client-id="auditor"]`)),
	)
	if err != nil {
		t.Fatalf("sessions and lookup: %v", err)
	}
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#lookup tbody tr').length`))
	if err != nil || n != 4 {
		t.Errorf("lookup rows: %d (%v), want 4", n, err)
	}
	shot(t, ctx, `#v-sessions`, "view-sessions.png")

	// A steady publisher shows up in the top topics and clients, and in a
	// trace of its packets.
	flood := dialReceiver(t, srv.tcpAddr, "flooder", 0)
	fctx, stopFlood := context.WithCancel(context.Background())
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		for fctx.Err() == nil {
			pctx, cancel := context.WithTimeout(fctx, 2*time.Second)
			flood.c.Publish(pctx, &paho.Publish{Topic: "flood/topic", QoS: 0, Payload: []byte(`{"n": 1}`)})
			cancel()
			select {
			case <-fctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { stopFlood(); <-floodDone }()
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#top-topics tr[data-topic="flood/topic"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#top-clients tr[data-client-id="flooder"]`)),
	)
	if err != nil {
		t.Fatalf("top topics and clients: %v", err)
	}
	shot(t, ctx, `#v-top`, "view-top.png")

	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#trace-kind`), "client_id"),
		chromedp.SetValue(chromedp.CSS(`#trace-target`), "flooder"),
		chromedp.Click(chromedp.CSS(`#trace-form button[type="submit"]`)),
		waitText(`#trace-status`, contains("tracing client flooder")),
		chromedp.WaitVisible(chromedp.CSS(`#trace tr[data-type="PUBLISH"][data-direction="in"][data-topic="flood/topic"]`)),
	)
	if err != nil {
		t.Fatalf("trace: %v", err)
	}
	shot(t, ctx, `#v-trace`, "view-trace.png")
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#trace-stop`)),
		waitText(`#trace-status`, is("stopped")),
	)
	if err != nil {
		t.Fatalf("stop trace: %v", err)
	}
	if srv.b.CurrentTrace() != nil {
		t.Error("trace still running after Stop")
	}

	// An offline session over its queue limit raises a drop alert.
	sleeper := dialReceiver(t, srv.tcpAddr, "sleeper", 300, "nap/#")
	sleeper.c.Disconnect(&paho.Disconnect{})
	brokertest.WaitFor(t, func() error {
		if c, ok := srv.b.Client("sleeper"); !ok || c.Connected {
			return errors.New("sleeper still connected")
		}
		return nil
	})
	pub, _ := mqttClient(t, srv.tcpAddr, "napper")
	pctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	for range 5 {
		if _, err := pub.Publish(pctx, &paho.Publish{Topic: "nap/1", QoS: 1, Payload: []byte("z")}); err != nil {
			t.Fatal(err)
		}
	}
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#alerts li.dropped[data-client-id="sleeper"]`)),
		waitText(`#alerts li.dropped[data-client-id="sleeper"]`, contains("3 deliveries dropped")),
		waitText(`#alert-count`, func(s string) bool { return s != "" }),
	)
	if err != nil {
		t.Fatalf("alerts: %v", err)
	}
	shot(t, ctx, `#v-alerts`, "view-alerts.png")
	screenshot(t, ctx, "dashboard-views.png")
	// The first screen, as a user sees it on opening the page (the
	// README's picture is this one).
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.scrollTo(0, 0), true`)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	saveShot(t, "dashboard-first-screen.png", png)

	// Nothing but the broker's origin: the page, its files, the API and
	// the MQTT WebSocket (and MQTT.js's timer worker, from a blob: URL of
	// the page's own origin: made in the page, not fetched).
	base := strings.TrimSuffix(srv.url, "/")
	ws := "ws://" + strings.TrimPrefix(base, "http://") + "/mqtt"
	mu.Lock()
	defer mu.Unlock()
	if len(requests) < 4 {
		t.Errorf("saw only %d requests: %v", len(requests), requests)
	}
	for _, u := range requests {
		if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "blob:"+base+"/") && u != ws {
			t.Errorf("request outside the broker: %s", u)
		}
	}
}
