package browser

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/examples/browser/app"
	"github.com/starling-mqtt/starling/internal/brokertest"
)

// syncLog is a log sink the test reads while the broker writes.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startTokenBroker runs a broker that lets in tokens signed with secret
// over WebSocket (pages from allowedOrigin) and anonymous clients on TCP;
// its log goes to the returned sink too.
func startTokenBroker(t *testing.T, secret []byte, allowedOrigin string) (*starling.Server, *syncLog) {
	t.Helper()
	dir := t.TempDir()
	sf := filepath.Join(dir, "jwt.secret")
	if err := os.WriteFile(sf, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := starling.DefaultConfig()
	cfg.TCP, cfg.HTTP, cfg.Data, cfg.Store = "127.0.0.1:0", "127.0.0.1:0", dir, "memory"
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.WebSocket.AllowedOrigins = []string{allowedOrigin}
	cfg.Auth.AllowAnonymous = false
	cfg.Auth.AnonymousListeners = []string{"tcp"}
	cfg.Auth.JWT.SecretFile = sf
	cfg.Auth.JWT.PublishClaim, cfg.Auth.JWT.SubscribeClaim = "mqtt_publish", "mqtt_subscribe"
	sink := &syncLog{}
	srv, err := starling.New(cfg, starling.WithLogger(slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	if srv.Addr() == nil {
		t.Fatalf("serve: %v", <-errc)
	}
	t.Cleanup(func() {
		srv.Close()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv, sink
}

// serveExample runs the example app (examples/browser) on its own port:
// another origin than the broker's, as a real web application.
func serveExample(t *testing.T, cfg app.Config) (origin string, setBroker func(string)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var h http.Handler
	setBroker = func(b string) {
		mu.Lock()
		defer mu.Unlock()
		cfg.Broker = b
		h = app.Handler(cfg)
	}
	setBroker(cfg.Broker)
	s := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hh := h
		mu.Unlock()
		hh.ServeHTTP(w, r)
	})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Serve(ln) }()
	t.Cleanup(func() { s.Close(); wg.Wait() })
	return "http://" + ln.Addr().String(), setBroker
}

// The example app in Chromium, end to end: the page fetches a token from
// the app's endpoint, connects over ws to a broker of another origin,
// shows the sensor values a Go client publishes and sends a command that a
// Go client receives; a page asking for an expired token shows the
// refusal (0x86); and with its origin not allowed, the page shows a failed
// connection while the broker logs the refused origin with the key that
// allows it.
func TestExampleBrowserApp(t *testing.T) {
	t.Parallel()
	secret := []byte(strings.Repeat("example-secret-", 3))
	origin, setBroker := serveExample(t, app.Config{Secret: secret})
	srv, brokerLog := startTokenBroker(t, secret, origin)
	setBroker("ws://" + srv.HTTPAddr().String() + "/mqtt")
	tcp := srv.Addr().String()

	cmds := make(chan *paho.Publish, 10)
	sub, _ := mqttClient(t, tcp, "command-reader")
	sub.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) { cmds <- pr.Packet; return true, nil })
	sctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := sub.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "commands/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	sensor, _ := mqttClient(t, tcp, "sensor")

	ctx := browser(t, 900, 700)
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/"),
		waitJS(`window.exampleState && exampleState.status === "connected" && exampleState.subscribed`, `JSON.stringify(window.exampleState)`)); err != nil {
		t.Fatalf("page did not connect: %v", err)
	}
	// The sensor publishes until the page shows its latest value (latest-
	// value delivery samples every 250 ms, so one message may be held).
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for {
			pctx, pcancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
			sensor.Publish(pctx, &paho.Publish{Topic: "sensors/room1/temp", QoS: 0, Payload: []byte("21.5")})
			pcancel()
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	err := chromedp.Do(ctx, waitJS(`exampleState.values["sensors/room1/temp"] === "21.5"`, `JSON.stringify(exampleState)`),
		waitText(`#values`, func(s string) bool { return strings.Contains(s, "sensors/room1/temp") && strings.Contains(s, "21.5") }),
		chromedp.Click(chromedp.CSS(`#send`)))
	close(stop)
	pubWG.Wait()
	if err != nil {
		t.Fatalf("page did not show the sensor value or send a command: %v", err)
	}
	select {
	case p := <-cmds:
		if !strings.HasPrefix(p.Topic, "commands/viewer-") || !strings.HasSuffix(p.Topic, "/led") {
			t.Fatalf("command on %q", p.Topic)
		}
	case <-time.After(brokertest.Patience(t)):
		t.Fatal("the page's command did not reach the Go client")
	}

	// An expired token: the page shows the refusal.
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/?ttl=-60"),
		waitJS(`window.exampleState && exampleState.refusals.includes(0x86) && exampleState.status.startsWith("refused")`, `JSON.stringify(window.exampleState)`)); err != nil {
		t.Fatalf("expired token not shown as refused: %v", err)
	}

	// Another origin, not allowed: the page's socket fails, and the broker's
	// log names the origin and websocket.allowed_origins.
	other, setOther := serveExample(t, app.Config{Secret: secret})
	setOther("ws://" + srv.HTTPAddr().String() + "/mqtt")
	if err := chromedp.Do(ctx, chromedp.Navigate(other+"/"),
		waitJS(`window.exampleState && exampleState.status.startsWith("refused: the broker closed the WebSocket") && document.getElementById("status").textContent.includes("websocket.allowed_origins")`, `JSON.stringify(window.exampleState)`)); err != nil {
		t.Fatalf("page from a refused origin did not show the failure: %v", err)
	}
	brokertest.WaitFor(t, func() error {
		if log := brokerLog.String(); !strings.Contains(log, `msg="websocket origin refused" origin=`+other) {
			return fmt.Errorf("broker log has no refused-origin line for %s:\n%s", other, log)
		}
		return nil
	})
	if !strings.Contains(brokerLog.String(), "websocket.allowed_origins") {
		t.Fatalf("refused-origin line does not say how to allow it:\n%s", brokerLog.String())
	}
}
