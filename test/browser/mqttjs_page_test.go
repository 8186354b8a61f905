package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// mqttjsPage is the test page: it loads the dashboard's vendored MQTT.js,
// connects over WebSocket to the broker named in ?broker=, subscribes to
// page/# at QoS 1, says it is ready, and publishes page/hello at QoS 1.
// What it receives goes to window.state, which the test reads. A second,
// bare WebSocket to the same URL records the extensions the browser
// negotiated.
const mqttjsPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>MQTT.js test page</title>
<script src="/mqtt.min.js"></script></head>
<body><pre id="log"></pre>
<script>
window.state = { connected: false, subscribed: false, published: false, received: [], errors: [] };
const log = (s) => { document.getElementById("log").textContent += s + "\n"; };
try {
  const broker = new URLSearchParams(location.search).get("broker");
  const probe = new WebSocket(broker, "mqtt");
  probe.onopen = () => { state.extensions = probe.extensions; probe.close(); };
  probe.onerror = () => { state.errors.push("probe WebSocket failed"); };
  const c = mqtt.connect(broker, { protocolVersion: 5, clientId: "browser-page", clean: true, reconnectPeriod: 0, connectTimeout: 10000 });
  c.on("error", (e) => { state.errors.push(String(e && e.message || e)); log("error: " + e); });
  c.on("message", (topic, payload, packet) => {
    state.received.push({ topic, payload: new TextDecoder().decode(payload), qos: packet.qos });
    log("message " + topic);
  });
  c.on("connect", async () => {
    state.connected = true;
    log("connected");
    try {
      const granted = await c.subscribeAsync("page/#", { qos: 1 });
      state.granted = granted.map((g) => g.qos);
      state.subscribed = true;
      await c.publishAsync("page/hello", "from the browser", { qos: 1 });
      state.published = true; // PUBACK received
    } catch (e) {
      state.errors.push(String(e && e.message || e));
    }
  });
} catch (e) {
  state.errors.push(String(e && e.message || e));
}
</script></body></html>
`

// pageState is window.state of the test page.
type pageState struct {
	Connected  bool     `json:"connected"`
	Subscribed bool     `json:"subscribed"`
	Published  bool     `json:"published"`
	Granted    []int    `json:"granted"`
	Extensions *string  `json:"extensions"`
	Errors     []string `json:"errors"`
	Received   []struct {
		Topic   string `json:"topic"`
		Payload string `json:"payload"`
		QoS     int    `json:"qos"`
	} `json:"received"`
}

// A real browser runs MQTT.js (the dashboard's vendored copy) from a page of
// another origin, allowed by websocket.allowed_origins, over ws to an
// in-process broker: it subscribes, publishes at QoS 1 (its own message
// comes back, and a Go client over TCP gets it), and receives a message a Go
// client publishes. The browser offers permessage-deflate, which the broker
// declines by default.
func TestBrowserMQTTJSPage(t *testing.T) {
	t.Parallel()
	testBrowserPage(t, false)
}

// The same with websocket.compression on: Chromium negotiates
// permessage-deflate, and messages both ways (one of 2,000 bytes from the
// broker, above the size Starling compresses) arrive intact.
func TestBrowserMQTTJSPageDeflate(t *testing.T) {
	t.Parallel()
	testBrowserPage(t, true)
}

func testBrowserPage(t *testing.T, compression bool) {
	ctx := browser(t, 800, 600)

	// The page's own server, on its own port: a cross-origin page, as a
	// web application served elsewhere would be.
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := "http://" + pln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/mqtt.min.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, "../../web/dashboard/vendor/mqtt.min.js")
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, mqttjsPage)
	})
	ps := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ps.Serve(pln) }()
	t.Cleanup(func() { ps.Close(); wg.Wait() })

	srv, tcpAddr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.WebSocket.AllowedOrigins = []string{origin}
		c.WebSocket.Compression = compression
	})
	// A Go client over TCP sees what the page publishes.
	got := make(chan *paho.Publish, 10)
	sub, _ := mqttClient(t, tcpAddr, "go-sub")
	sub.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil })
	sctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := sub.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "page/hello", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	broker := "ws://" + srv.HTTPAddr().String() + "/mqtt"
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/?broker="+url.QueryEscape(broker))); err != nil {
		t.Fatal(err)
	}
	state := func() pageState {
		t.Helper()
		js, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.state || null)`))
		if err != nil {
			t.Fatal(err)
		}
		var s pageState
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatalf("window.state %q: %v", js, err)
		}
		return s
	}
	waitFor := func(what string, ok func(pageState) bool) pageState {
		t.Helper()
		var s pageState
		// Every 100 ms: each look evaluates JavaScript in the page.
		brokertest.Poll(t, 100*time.Millisecond, brokertest.Patience(t), func() error {
			if s = state(); len(s.Errors) > 0 {
				t.Fatalf("page errors while waiting for %s: %q", what, s.Errors)
			}
			if !ok(s) {
				return fmt.Errorf("page never got %s: state %+v", what, s)
			}
			return nil
		})
		return s
	}
	s := waitFor("its subscription and its own QoS 1 message back", func(s pageState) bool { return s.Published && len(s.Received) >= 1 })
	s = waitFor("the probe WebSocket's extensions", func(s pageState) bool { return s.Extensions != nil })
	if got := strings.Contains(*s.Extensions, "permessage-deflate"); got != compression {
		t.Fatalf("websocket.compression %v: the browser negotiated %q", compression, *s.Extensions)
	}
	if len(s.Granted) != 1 || s.Granted[0] != 1 {
		t.Fatalf("subscription granted %v, want [1]", s.Granted)
	}
	if r := s.Received[0]; r.Topic != "page/hello" || r.Payload != "from the browser" || r.QoS != 1 {
		t.Fatalf("page received %+v, want page/hello \"from the browser\" at QoS 1", r)
	}
	select {
	case p := <-got:
		if string(p.Payload) != "from the browser" || p.QoS != 1 {
			t.Fatalf("Go subscriber got %q at QoS %d", p.Payload, p.QoS)
		}
	case <-time.After(brokertest.Patience(t)):
		t.Fatal("the page's message did not reach the Go subscriber")
	}

	// And the other way: a Go client publishes, the page receives.
	pub, _ := mqttClient(t, tcpAddr, "go-pub")
	pctx, pcancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer pcancel()
	fromGo := "from go"
	if compression {
		fromGo = strings.Repeat("from go ", 250)
	}
	if _, err := pub.Publish(pctx, &paho.Publish{Topic: "page/from-go", QoS: 1, Payload: []byte(fromGo)}); err != nil {
		t.Fatal(err)
	}
	s = waitFor("the Go client's message", func(s pageState) bool { return len(s.Received) >= 2 })
	if r := s.Received[1]; r.Topic != "page/from-go" || r.Payload != fromGo || r.QoS != 1 {
		t.Fatalf("page received %s at QoS %d with %d bytes, want page/from-go at QoS 1 with %d", r.Topic, r.QoS, len(r.Payload), len(fromGo))
	}
}
