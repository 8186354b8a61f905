package integration

import (
	"context"
	"net/http"
	"strings"
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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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
