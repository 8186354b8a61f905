package starling

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/starling-mqtt/starling/internal/auth/httpauth"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/limit"
	"github.com/starling-mqtt/starling/internal/transport"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A refused Origin is logged once per origin (a minute), with the key
// that allows it.
func TestOriginRefusalsLoggedOncePerOrigin(t *testing.T) {
	var buf syncBuf
	o := newRefusals(limit.NewLines(slog.New(slog.NewTextHandler(&buf, nil)), 100), []string{"/mqtt"})
	hook := o.hook("http")
	for _, origin := range []string{"https://a.example", "https://a.example", "https://b.example", "https://a.example"} {
		r := httptest.NewRequest("GET", "http://broker.test/mqtt", nil)
		r.Header.Set("Origin", origin)
		hook(r, transport.RefusedOrigin)
	}
	out := buf.String()
	if n := strings.Count(out, `msg="websocket origin refused"`); n != 2 {
		t.Fatalf("%d lines, want 2 (one per origin):\n%s", n, out)
	}
	for _, want := range []string{"origin=https://a.example", "origin=https://b.example", "websocket.allowed_origins", "path=/mqtt", "listener=http", "reason=origin"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := o.upgrade[slices.Index(transport.RefusedReasons, transport.RefusedOrigin)].Load(); n != 4 {
		t.Fatalf("counted %d origin refusals, want 4 (every one, logged or not)", n)
	}
}

// Each reason is logged with its own hint, the same refusal again only
// after a minute; the alerts carry the counts by reason and the latest.
func TestRefusalsLogAndAlerts(t *testing.T) {
	var buf syncBuf
	o := newRefusals(limit.NewLines(slog.New(slog.NewTextHandler(&buf, nil)), 100), []string{"/mqtt"})
	now := time.Unix(1000, 0)
	o.now = func() time.Time { return now }
	hook := o.hook("https")
	req := func(path string) *http.Request {
		r := httptest.NewRequest("GET", "https://broker.test"+path, nil)
		r.Header.Set("Origin", "https://app.example")
		return r
	}
	hook(req("/ws"), transport.RefusedWrongPath)
	hook(req("/ws"), transport.RefusedWrongPath)
	hook(req("/mqtt"), transport.RefusedSubprotocol)
	out := buf.String()
	if n := strings.Count(out, `msg="websocket upgrade refused"`); n != 2 {
		t.Fatalf("%d lines, want 2:\n%s", n, out)
	}
	for _, want := range []string{"origin=https://app.example host=broker.test path=/ws remote=192.0.2.1:1234 listener=https reason=wrong_path", "served at /mqtt (websocket.paths)",
		"reason=subprotocol", "websocket.allow_no_subprotocol"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	now = now.Add(refusalLogGap)
	hook(req("/ws"), transport.RefusedWrongPath)
	if n := strings.Count(buf.String(), "reason=wrong_path"); n != 2 {
		t.Fatalf("after a minute: %d wrong_path lines, want 2", n)
	}

	hook(req("/mqtt"), transport.RefusedNotWebSocket) // counted, not an alert
	o.loginFailed(&broker.ConnectInfo{ClientID: "page", Listener: "https", Origin: "https://app.example", Path: "/mqtt"}, "token: token expired")
	o.loginFailed(&broker.ConnectInfo{ClientID: "dev", Listener: "tcp"}, "wrong password")
	al := o.alerts()
	if len(al) != 2 || al[0].Kind != "ws_refused" || al[0].Count != 4 || al[1].Kind != "auth_refused" || al[1].Count != 2 {
		t.Fatalf("alerts %+v", al)
	}
	if d := al[0].Detail; !strings.Contains(d, "subprotocol 1, wrong_path 3") || !strings.Contains(d, `latest: wrong_path: origin "https://app.example", path /ws`) {
		t.Errorf("ws alert detail %q", d)
	}
	if d := al[1].Detail; !strings.Contains(d, "(1 over WebSocket)") || !strings.Contains(d, "wrong password") {
		t.Errorf("auth alert detail %q", d)
	}
	if o.auth.Load() != 1 {
		t.Errorf("WebSocket login refusals %d, want 1", o.auth.Load())
	}
}

// The refusal and hook metrics pass the Prometheus linter.
func TestRefusalMetricsLint(t *testing.T) {
	o := newRefusals(limit.NewLines(slog.New(slog.DiscardHandler), 1), nil)
	for _, c := range []prometheus.Collector{o, hookCollector{&httpauth.Stats{}}} {
		problems, err := promtest.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	doc, err := os.ReadFile("docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mqtt_ws_upgrade_refused_total", "mqtt_ws_auth_refused_total", "mqtt_auth_http_requests_total", "mqtt_auth_http_cache_hits_total"} {
		if n, err := promtest.GatherAndCount(registry(t, o, hookCollector{&httpauth.Stats{}}), name); err != nil || n == 0 {
			t.Errorf("metric %s not collected (%d series, %v)", name, n, err)
		}
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("metric %s is not documented in docs/observability.md", name)
		}
	}
}

func registry(t *testing.T, cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// Every refused upgrade but a plain HTTP request, repeats included, goes
// to the event history.
func TestRefusalsRecorded(t *testing.T) {
	o := newRefusals(limit.NewLines(slog.New(slog.DiscardHandler), 100), []string{"/mqtt"})
	var mu sync.Mutex
	var got []broker.Event
	o.record = func(e broker.Event) { mu.Lock(); got = append(got, e); mu.Unlock() }
	hook := o.hook("http")
	for range 3 {
		r := httptest.NewRequest("GET", "http://broker.test/mqtt", nil)
		r.Header.Set("Origin", "https://evil.example")
		hook(r, transport.RefusedOrigin)
	}
	hook(httptest.NewRequest("GET", "http://broker.test/ws", nil), transport.RefusedWrongPath)
	hook(httptest.NewRequest("GET", "http://broker.test/mqtt", nil), transport.RefusedNotWebSocket)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4 || got[0].Kind != broker.EventOriginRefused || got[0].Listener != "http" || !strings.Contains(got[0].Reason, "https://evil.example") {
		t.Fatalf("recorded %+v", got)
	}
	if got[3].Kind != broker.EventUpgradeRefused || !strings.Contains(got[3].Reason, "wrong_path") {
		t.Errorf("wrong path recorded as %+v", got[3])
	}
}
