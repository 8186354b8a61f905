// Package browser holds the end-to-end tests of the dashboard in headless
// Chromium (Debian's chromium package, driven by chromedp): a real broker
// serves the page and MQTT over WebSocket on one loopback HTTP listener, as
// the starling binary does, and real MQTT clients act on it from outside
// the browser.
package browser

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/admin"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/transport"
)

// chromium returns the browser's path ($CHROMIUM, default
// /usr/bin/chromium). Without it the test fails on CI (CI=true), where
// test.sh installs it, and is skipped elsewhere.
func chromium(t *testing.T) string {
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: test.sh installs chromium (need_chromium)", path)
		}
		t.Skipf("%s is missing: run ./test.sh, which installs chromium, or set CHROMIUM", path)
	}
	return path
}

// server is a broker with its admin side: MQTT over TCP for the test's
// clients, and one HTTP listener serving the dashboard at / and MQTT over
// WebSocket at /mqtt, all on 127.0.0.1.
type server struct {
	b       *broker.Broker
	tcpAddr string
	url     string
	// wsDown, while set, makes /mqtt answer 503: with the page's
	// connection kicked, the dashboard sees the broker down.
	wsDown *atomic.Bool
	// stop ends the broker and its listeners (also at the test's end),
	// for a test that starts another on the same HTTP address.
	stop func()
	// httpAddr is the HTTP listener's address.
	httpAddr string
}

func startServer(t *testing.T) *server {
	t.Helper()
	return startServerLimits(t, config.Default().Limits)
}

// startServerLimits is startServer with the given broker limits.
func startServerLimits(t *testing.T, lim config.Limits) *server {
	t.Helper()
	return startServerAuthz(t, lim, nil)
}

// startServerAuthz is startServerLimits with an authorizer (nil: all
// allowed); every client is let in under the user name it gives.
func startServerAuthz(t *testing.T, lim config.Limits, authz broker.Authorizer) *server {
	t.Helper()
	return startServerOn(t, lim, authz, "127.0.0.1:0")
}

// startServerOn is startServerAuthz with the HTTP listener on httpAddr.
func startServerOn(t *testing.T, lim config.Limits, authz broker.Authorizer, httpAddr string) *server {
	t.Helper()
	return startServerWith(t, lim, authz, httpAddr, nil)
}

// startServerWith is startServerOn with the admin options changed by opts.
func startServerWith(t *testing.T, lim config.Limits, authz broker.Authorizer, httpAddr string, opts func(*admin.Options)) *server {
	t.Helper()
	return startServerWrapped(t, lim, authz, httpAddr, opts, nil)
}

// startServerWrapped is startServerWith with the WebSocket connections
// wrapped by wrap (nil: as they are) before the broker gets them.
func startServerWrapped(t *testing.T, lim config.Limits, authz broker.Authorizer, httpAddr string, opts func(*admin.Options), wrap func(net.Conn) net.Conn) *server {
	t.Helper()
	b := broker.New(lim, nil)
	if authz != nil {
		// An authorizer that is also an authenticator decides logins too.
		authn, _ := authz.(broker.Authenticator)
		b.SetAuth(authn, authz)
	}
	ao := admin.Options{Version: "test", FeedInterval: time.Second, SysInterval: time.Second,
		Checker: admin.StaticChecker{User: "admin", Password: "secret"}}
	if opts != nil {
		opts(&ao)
	}
	adm := admin.New(b, ao)

	var wg sync.WaitGroup
	tcpAddr, stopTCP := brokertest.Listen(t, func(c net.Conn) { b.HandleConnOn(c, "tcp") })
	mux := http.NewServeMux()
	wsDown := new(atomic.Bool)
	ws := transport.NewWSHandler(transport.WSOptions{}, func(c net.Conn, _ *http.Request) {
		if wrap != nil {
			c = wrap(c)
		}
		b.HandleConnOn(c, "http")
	})
	mux.HandleFunc("/mqtt", func(w http.ResponseWriter, r *http.Request) {
		if wsDown.Load() {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		ws.ServeHTTP(w, r)
	})
	mux.Handle("/", adm.Handler())
	hln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	wg.Add(1)
	go func() { defer wg.Done(); hs.Serve(hln) }()
	ctx, stop := context.WithCancel(context.Background())
	wg.Add(1)
	go func() { defer wg.Done(); adm.Run(ctx) }()
	var once sync.Once
	stopAll := func() {
		once.Do(func() {
			stop()
			stopTCP()
			hs.Close()
			b.Close(2 * time.Second)
			wg.Wait()
		})
	}
	t.Cleanup(stopAll)
	return &server{b: b, tcpAddr: tcpAddr, url: "http://" + hln.Addr().String() + "/", wsDown: wsDown, stop: stopAll,
		httpAddr: hln.Addr().String()}
}

// signIn opens the dashboard, logs in as the test server's admin and
// waits until the page is live.
func signIn(url string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		return chromedp.Do(ctx,
			chromedp.Navigate(url),
			chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
			chromedp.SendKeys(chromedp.CSS(`#user`), "admin"),
			chromedp.SendKeys(chromedp.CSS(`#password`), "secret"),
			chromedp.Click(chromedp.CSS(`#login-button`)),
			chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		)
	})
}

// logIn is signIn, then waits until the page shows its admin controls.
func logIn(url string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		return chromedp.Do(ctx,
			signIn(url),
			waitJS(`document.body.dataset.admin === 'yes'`, `document.body.dataset.admin`),
		)
	})
}

// mqttClient connects a paho.golang MQTT 5 client; it disconnects when the
// test ends, or earlier through the returned function.
func mqttClient(t *testing.T, addr, id string) (*paho.Client, func()) {
	t.Helper()
	c, _ := brokertest.DialPaho(t, addr, id, &paho.Connect{CleanStart: true, KeepAlive: 30})
	return c.Client, c.Close
}

// browser starts headless Chromium with a fresh profile, in which no host
// name resolves but 127.0.0.1: a page that fetched anything from elsewhere
// would fail here instead of reaching out.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], // includes --headless
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.WindowSize(width, height),
	)
	// Every wait on the page ends with this context: it follows the
	// test's deadline, since a fixed one is missed by a slow -race run.
	ctx, cancel := context.WithTimeout(context.Background(), budget(t))
	t.Cleanup(cancel)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc) // waits for the browser to exit
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)
	return ctx
}

// budget bounds a whole browser test, all the waits on its page: the time
// left before the binary's -timeout less a margin to fail by name, at most
// maxBudget. brokertest.Patience (at most 2 minutes) is meant for one wait;
// a whole test ran out of it under a load average of 19
// (TestDashboardLive, 121 s, in the middle of its steps).
func budget(t *testing.T) time.Duration {
	d := maxBudget
	if deadline, ok := t.Deadline(); ok {
		left := time.Until(deadline)
		d = min(d, left-min(left/2, 30*time.Second))
	}
	return max(d, brokertest.Patience(t))
}

// maxBudget keeps one hung test from using up the time of those after
// it.
const maxBudget = 6 * time.Minute

// screenshot saves a PNG of the page in $SCREENSHOT_DIR, default
// test/browser/out.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100 = PNG
	if err != nil {
		t.Fatal(err)
	}
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

// waitText waits until the text of the element sel selects satisfies ok
// (polling: the page re-renders its lists every second).
func waitText(sel string, ok func(string) bool) chromedp.Action[chromedp.Void] {
	js := fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel)
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		var last string
		for {
			txt, err := chromedp.Evaluate[string](js)(ctx, tg)
			if err != nil {
				if ctx.Err() != nil { // the deadline came during the evaluation
					return fmt.Errorf("%s: text %q never matched: %w", sel, last, err)
				}
				return err
			}
			last = strings.TrimSpace(txt)
			if ok(last) {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: text %q never matched: %w", sel, last, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

// clickLive clicks the element sel selects in a list the page re-renders
// every second: a re-render between finding the element and clicking it
// leaves a node that is gone ("Could not find node with given id"), so
// the click is tried again on the new one.
func clickLive(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for {
			_, err := chromedp.Click(chromedp.CSS(sel))(ctx, tg)
			if err == nil || !strings.Contains(err.Error(), "Could not find node") {
				return err
			}
		}
	})
}

func is(want string) func(string) bool { return func(s string) bool { return s == want } }

// waitJS waits until the JavaScript expression cond is true; on timeout
// the error shows the value of diag.
func waitJS(cond, diag string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for {
			ok, err := chromedp.Evaluate[bool](cond)(ctx, tg)
			if err != nil {
				if ctx.Err() != nil {
					last, _ := chromedp.Evaluate[string](diag)(context.WithoutCancel(ctx), tg)
					return fmt.Errorf("condition never held (%s): %w", last, err)
				}
				return err
			}
			if ok {
				return nil
			}
			select {
			case <-ctx.Done():
				last, _ := chromedp.Evaluate[string](diag)(context.WithoutCancel(ctx), tg)
				return fmt.Errorf("condition never held (%s): %w", last, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

// tinyClient connects an MQTT 5 client that accepts packets of at most
// maxSize bytes, with a keep alive of 10 s, subscribed to filter.
func tinyClient(t *testing.T, addr, id string, maxSize uint32, filter string) *paho.Client {
	t.Helper()
	c, _ := brokertest.DialPaho(t, addr, id, &paho.Connect{CleanStart: true, KeepAlive: 10,
		Properties: &paho.ConnectProperties{MaximumPacketSize: &maxSize}})
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return c.Client
}

// steadyPublisher publishes each payload to its topic every period (QoS
// 0) until the returned function is called.
func steadyPublisher(t *testing.T, c *paho.Client, period time.Duration, msgs map[string][]byte) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			for topic, p := range msgs {
				c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 0, Payload: p})
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func TestDashboardLive(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	srv := startServer(t)

	// Log in: the page's own MQTT connection is the one connected client.
	err := chromedp.Do(ctx,
		signIn(srv.url),
		waitText(`#m-connected`, is("1")),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}

	// A client connects from outside the browser: the figure and the list
	// follow, and a message it publishes appears in the topic tree with a
	// rate.
	probe, leave := mqttClient(t, srv.tcpAddr, "probe-1")
	err = chromedp.Do(ctx,
		waitText(`#m-connected`, is("2")),
		chromedp.WaitVisible(chromedp.CSS(`#clients tr[data-client-id="probe-1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#events li.connected[data-client-id="probe-1"]`)),
	)
	if err != nil {
		t.Fatalf("client connect not shown: %v", err)
	}
	// The list shows how each client came in: plain TCP, its keep alive,
	// and its dropped deliveries.
	probeRow := `#clients tr[data-client-id="probe-1"]`
	err = chromedp.Do(ctx,
		waitText(probeRow+` td.proto`, is("5")),
		waitText(probeRow+` td.tls`, is("no")),
		waitText(probeRow+` td.keepalive`, is("30 s")),
		waitText(probeRow+` td.dropped`, is("0")),
	)
	if err != nil {
		t.Fatalf("client row: %v", err)
	}
	// A client that takes packets of at most 64 bytes misses a bigger
	// message: one dropped (too large).
	tinyClient(t, srv.tcpAddr, "tiny", 64, "big/#")
	pctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := probe.Publish(pctx, &paho.Publish{Topic: "big/blob", QoS: 1, Payload: make([]byte, 200)}); err != nil {
		t.Fatal(err)
	}
	// A client over TLS with a client certificate.
	tlsClient(t, srv, "secure", "device-7")
	err = chromedp.Do(ctx,
		waitText(`#clients tr[data-client-id="tiny"] td.keepalive`, is("10 s")),
		waitText(`#clients tr[data-client-id="tiny"] td.dropped`, is("1")),
		waitText(`#clients tr[data-client-id="secure"] td.tls`, is("TLS 1.3 · device-7")),
		waitText(`#clients tr[data-client-id="secure"] td.keepalive`, is("45 s")),
	)
	if err != nil {
		t.Fatalf("dropped in the client list: %v", err)
	}
	shot(t, ctx, `#v-clients`, "view-clients.png")

	// Two topics published to at a steady pace, and a retained one: the
	// tree shows each topic's messages and bytes per second from the
	// broker's topics feed, their sum on the parent, and the retained
	// badge.
	if _, err := probe.Publish(pctx, &paho.Publish{Topic: "plant/line-1/setpoint", QoS: 1, Retain: true,
		Payload: []byte(`{"celsius": 22}`)}); err != nil {
		t.Fatal(err)
	}
	stopPub := steadyPublisher(t, probe, 100*time.Millisecond, map[string][]byte{
		"plant/line-1/temperature": []byte(`{"celsius": 21}`), // 15 bytes
		"plant/line-1/pressure":    []byte(`{"bar": 1.5}`),    // 12 bytes
	})
	defer stopPub()
	node := `#tree li[data-topic="plant/line-1/temperature"]`
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(node)),
		waitText(node+` pre.payload.json`, is("{\n  \"celsius\": 21\n}")), // pretty-printed
		waitText(`#tree li[data-topic="plant/line-1/setpoint"] > .row > .badge`, is("retained")),
		// About 10 messages/s of 15 bytes each (a loaded machine may
		// miss a few ticks of the publisher).
		waitJS(`(() => {
			const r = (t) => document.querySelector('#tree li[data-topic="' + t + '"] > .row > span.rate:not(.total)');
			const temp = r('plant/line-1/temperature'), pres = r('plant/line-1/pressure');
			const sum = document.querySelector('#tree li[data-topic="plant/line-1"] > .row > span.rate.total');
			if (!temp || !pres || !sum) return false;
			const m = Number(temp.dataset.rate), b = Number(temp.dataset.bytes);
			const pm = Number(pres.dataset.rate), pb = Number(pres.dataset.bytes);
			return m >= 5 && m <= 11 && Math.abs(b - 15 * m) < 1e-6 && pm >= 5 && pm <= 11 && Math.abs(pb - 12 * pm) < 1e-6 &&
				Math.abs(Number(sum.dataset.rate) - (m + pm)) < 1e-6 && Math.abs(Number(sum.dataset.bytes) - (b + pb)) < 1e-6;
		})()`, `Array.from(document.querySelectorAll('#tree li[data-topic^="plant/line-1"] > .row'), (r) => r.textContent).join(' | ')`),
		waitText(node+` > .row > span.bytes:not(.total)`, contains("B/s")),
	)
	if err != nil {
		t.Fatalf("topic tree: %v", err)
	}
	shot(t, ctx, `#v-overview`, "view-overview.png")
	stopPub()
	screenshot(t, ctx, "dashboard.png")

	// Disconnect a client from the list (the management API, with the
	// login's credentials).
	mqttClient(t, srv.tcpAddr, "victim")
	err = chromedp.Do(ctx,
		clickLive(`#clients button.kick[data-client-id="victim"]`),
		waitText(`#action-status`, is("disconnected victim")),
		chromedp.WaitVisible(chromedp.CSS(`#events li.disconnected[data-client-id="victim"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#clients tr[data-client-id="victim"]`)),
	)
	if err != nil {
		t.Fatalf("disconnect from the list: %v", err)
	}

	leave()
	err = chromedp.Do(ctx,
		waitText(`#m-connected`, is("3")), // the page, tiny and secure
		chromedp.WaitVisible(chromedp.CSS(`#events li.disconnected[data-client-id="probe-1"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#clients tr[data-client-id="probe-1"]`)),
	)
	if err != nil {
		t.Fatalf("client disconnect not shown: %v", err)
	}
}

// The page is usable in a phone-sized viewport: nothing wider than the
// screen.
func TestDashboardNarrow(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 390, 844)
	srv := startServer(t)
	var width float64
	err := chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Navigate(srv.url),
		chromedp.Click(chromedp.CSS(`#login-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		waitText(`#m-connected`, is("1")),
	)
	if err != nil {
		t.Fatal(err)
	}
	width, err = chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if width > 390 {
		t.Errorf("page is %v px wide in a 390 px viewport", width)
	}
	screenshot(t, ctx, "dashboard-narrow.png")
}
