package integration

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// websocket.paths and websocket.allowed_origins from the config reach the
// HTTP listener.
func TestWSConfigPathsAndOrigins(t *testing.T) {
	t.Parallel()
	srv, _ := testutil.StartBroker(t, func(c *starling.Config) {
		c.WebSocket.Paths = []string{"/a", "/b/c"}
		c.WebSocket.AllowedOrigins = []string{"https://*.example.com"}
	})
	base := "ws://" + srv.HTTPAddr().String()
	dial := func(path, origin string) error {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, err := transport.DialWS(ctx, base+path, "mqtt", h)
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, tt := range []struct {
		path, origin string
		want         string // "" = accepted, else part of the error
	}{
		{"/a", "", ""},
		{"/b/c", "", ""},
		{"/b/c", "https://app.example.com", ""},
		{"/a", "https://evil.example.org", "403"},
		{"/mqtt", "", "404"}, // the default path is replaced, not kept
		{"/a/", "", "404"},   // exact match only
		{"/b", "", "404"},
	} {
		err := dial(tt.path, tt.origin)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s with Origin %q: %v", tt.path, tt.origin, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s with Origin %q: %v, want an error with %s", tt.path, tt.origin, err, tt.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	wc, err := transport.DialWS(ctx, base+"/b/c", "mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := wsV5Client(t, wc, "ws-config")
	c.sub(t, paho.SubscribeOptions{Topic: "p", QoS: 1})
	c.pub(t, &paho.Publish{Topic: "p", QoS: 1, Payload: []byte("x")})
	if m := c.expect(t); string(m.Payload) != "x" {
		t.Fatalf("got %q", m.Payload)
	}
}

// Without websocket.allow_no_subprotocol a client offering no subprotocol
// is refused; with it, it is served.
func TestWSConfigAllowNoSubprotocol(t *testing.T) {
	t.Parallel()
	for _, allow := range []bool{false, true} {
		srv, _ := testutil.StartBroker(t, func(c *starling.Config) { c.WebSocket.AllowNoSubprotocol = allow })
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		wc, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", "", nil)
		cancel()
		if allow != (err == nil) {
			t.Errorf("allow_no_subprotocol %v: dial error %v", allow, err)
		}
		if err == nil {
			wc.Close()
		} else if !strings.Contains(err.Error(), "400") {
			t.Errorf("refused with %v, want 400", err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// With trusted_proxies, the client address in X-Forwarded-For (right-most
// untrusted entry) is the connection's remote address, as the broker logs
// it; without, the header is ignored.
func TestWSConfigTrustedProxies(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		trusted []string
		want    string
	}{
		{[]string{"127.0.0.1"}, "remote=198.51.100.2:0"},
		{nil, "remote=127.0.0.1:"},
	} {
		var logs syncBuffer
		cfg := starling.DefaultConfig()
		cfg.TCP, cfg.HTTP, cfg.Data = "", "127.0.0.1:0", t.TempDir()
		cfg.ShutdownTimeout = 2 * time.Second
		cfg.TrustedProxies = tt.trusted
		srv, err := starling.New(cfg, starling.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve() }()
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		// 203.0.113.9 is what the client claimed; 198.51.100.2 is what the
		// trusted proxy (127.0.0.1) appended.
		h := http.Header{"X-Forwarded-For": {"203.0.113.9, 198.51.100.2"}}
		wc, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", "mqtt", h)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: wc})
		ctx, cancel = context.WithTimeout(context.Background(), testutil.Patience(t))
		_, err = c.Connect(ctx, &paho.Connect{ClientID: "proxied", CleanStart: true, KeepAlive: 30})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.Disconnect(&paho.Disconnect{})
		wc.Close()
		<-c.Done()
		srv.Close()
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		var line string
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, "client connected") {
				line = l
			}
		}
		if !strings.Contains(line, tt.want) {
			t.Errorf("trusted_proxies %q: log line %q, want %s", tt.trusted, line, tt.want)
		}
	}
}
