package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/admin"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// rawUpgrade sends an upgrade request line by line and returns the status.
func rawUpgrade(t *testing.T, addr, path, headers string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testutil.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testutil.Patience(t)))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" + headers + "\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// WebSocket upgrades refused for a wrong path, a missing subprotocol, a bad
// key and a foreign origin, and a token refused over WebSocket: each is
// logged with its origin, path and reason, counted in /metrics and listed
// in the dashboard's alerts feed.
func TestWSRefusalsVisible(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "jwt.secret")
	writeFile(t, secret, string(jwtSecret)+"\n")
	cfg := starling.DefaultConfig()
	cfg.TCP, cfg.HTTP, cfg.Data, cfg.Store = "127.0.0.1:0", "127.0.0.1:0", t.TempDir(), "memory"
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.Auth.AllowAnonymous = false
	cfg.Auth.AnonymousListeners = []string{"tcp"}
	cfg.Auth.JWT.SecretFile = secret
	cfg.WebSocket.AllowedOrigins = []string{"https://app.example"}
	logs := &lockedLog{}
	srv, err := starling.New(cfg, starling.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	if srv.Addr() == nil {
		t.Fatalf("serve: %v", <-errc)
	}
	t.Cleanup(func() { srv.Close(); <-errc })
	httpAddr := srv.HTTPAddr().String()

	// The dashboard's alerts feed, read by a local tool on TCP.
	alerts := make(chan []byte, 64)
	sub, ack := dialV5(t, srv.Addr().String(), "alerts-reader", nil)
	if sub == nil {
		t.Fatalf("CONNACK %+v", ack)
	}
	sub.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		if pr.Packet.Topic == admin.FeedAlerts {
			select {
			case alerts <- pr.Packet.Payload:
			default:
			}
		}
		return true, nil
	})
	sub.sub(t, paho.SubscribeOptions{Topic: admin.FeedAlerts})

	const origin = "Origin: https://app.example\r\n"
	for _, tc := range []struct {
		path, headers string
		status        int
	}{
		{"/ws", origin + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n", 404},
		{"/mqtt", origin + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 400},
		{"/mqtt", origin + "Sec-WebSocket-Key: short\r\nSec-WebSocket-Protocol: mqtt\r\n", 400},
		{"/mqtt", "Origin: https://evil.example\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n", 403},
	} {
		if got := rawUpgrade(t, httpAddr, tc.path, tc.headers); got != tc.status {
			t.Errorf("%s %q: status %d, want %d", tc.path, tc.headers, got, tc.status)
		}
	}
	// A page of the allowed origin with an expired token.
	ctx, cancel := context.WithTimeout(t.Context(), testutil.Patience(t))
	defer cancel()
	wsc, err := transport.DialWS(ctx, "ws://"+httpAddr+"/mqtt", "mqtt", http.Header{"Origin": {"https://app.example"}})
	if err != nil {
		t.Fatal(err)
	}
	r := testutil.NewRaw(t, wsc, packet.V5)
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "page", KeepAlive: 30,
		HasPassword: true, Password: []byte(jwtToken(t, "viewer", -time.Minute, nil))})
	if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.BadUsernameOrPassword {
		t.Fatalf("expired token over WebSocket: %+v, want 0x86", ack)
	}
	r.Close()

	out := logs.String()
	for _, want := range []string{
		`msg="websocket upgrade refused" origin=https://app.example host=` + httpAddr + ` path=/ws`,
		`listener=http reason=wrong_path hint="MQTT over WebSocket is served at /mqtt (websocket.paths) (logged once a minute)"`,
		`path=/mqtt remote=127.0.0.1:`,
		`reason=subprotocol hint=`,
		`reason=bad_key hint=`,
		`msg="websocket origin refused" origin=https://evil.example`,
		`msg="login failed" client_id=page`,
		`listener=http origin=https://app.example path=/mqtt reason="token: token expired"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`mqtt_ws_upgrade_refused_total{reason="wrong_path"} 1`, `mqtt_ws_upgrade_refused_total{reason="subprotocol"} 1`,
		`mqtt_ws_upgrade_refused_total{reason="bad_key"} 1`, `mqtt_ws_upgrade_refused_total{reason="origin"} 1`, "mqtt_ws_auth_refused_total 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The alerts feed lists both kinds (published once a second).
	for got := map[string]admin.Alert{}; got["ws_refused"].Count != 4 || got["auth_refused"].Count != 1; {
		select {
		case p := <-alerts:
			var f admin.AlertsFeed
			if err := json.Unmarshal(p, &f); err != nil {
				t.Fatal(err)
			}
			for _, a := range f.Alerts {
				got[a.Kind] = a
			}
		case <-ctx.Done():
			t.Fatalf("alerts feed: %+v, want ws_refused 4 and auth_refused 1", got)
		}
	}
}
