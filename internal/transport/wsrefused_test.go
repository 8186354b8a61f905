package transport

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// refusals collects the reasons a handler reports. The upgrader writes
// its refusal before the handler reports it, so a client may read the
// answer first: wait waits for the report.
type refusals struct {
	mu  sync.Mutex
	got []string
}

func (r *refusals) opts() WSOptions {
	return WSOptions{OnRefused: func(_ *http.Request, reason string) {
		r.mu.Lock()
		r.got = append(r.got, reason)
		r.mu.Unlock()
	}}
}

// wait returns the reasons reported once there is one, or at once when
// none is expected (want ""): a request that was not refused is never
// reported.
func (r *refusals) wait(t *testing.T, want string) []string {
	t.Helper()
	deadline := time.Now().Add(brokertest.Patience(t))
	for {
		r.mu.Lock()
		got := append([]string(nil), r.got...)
		r.mu.Unlock()
		if want == "" || len(got) > 0 || time.Now().After(deadline) {
			return got
		}
		time.Sleep(time.Millisecond)
	}
}

// Every refusal before the upgrade is reported with its reason.
func TestWSRefusedReasons(t *testing.T) {
	for _, tc := range []struct {
		name, header, want string
		status             int
	}{
		{"origin", "Origin: https://evil.example\r\nSec-WebSocket-Protocol: mqtt\r\n", RefusedOrigin, 403},
		{"subprotocol", "", RefusedSubprotocol, 400},
		{"bad version", "Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Version: 8\r\n", RefusedBadVersion, 426},
		{"ok", "Sec-WebSocket-Protocol: mqtt\r\n", "", 101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r refusals // each case its own server and reports
			addr := startWS(t, r.opts(), func(c net.Conn, _ *http.Request) { c.Close() })
			resp, _, _ := rawHandshake(t, addr, tc.header, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			got := r.wait(t, tc.want)
			if tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
				t.Fatalf("reported %v, want [%s]", got, tc.want)
			}
		})
	}

	// A bad key and a request without Upgrade, over plain HTTP.
	for _, tc := range []struct {
		key, upgrade, want string
		status             int
	}{
		{"not-base64!", "websocket", RefusedBadKey, 400},
		{"", "", RefusedNotWebSocket, 426},
	} {
		var r refusals
		addr := startWS(t, r.opts(), func(c net.Conn, _ *http.Request) { c.Close() })
		req, _ := http.NewRequest("GET", "http://"+addr+"/mqtt", nil)
		if tc.upgrade != "" {
			req.Header.Set("Upgrade", tc.upgrade)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Protocol", "mqtt")
			req.Header.Set("Sec-WebSocket-Key", tc.key)
		}
		resp, err := (&http.Client{Timeout: brokertest.Patience(t)}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := r.wait(t, tc.want); resp.StatusCode != tc.status || len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: status %d reported %v, want %d [%s]", tc.want, resp.StatusCode, got, tc.status, tc.want)
		}
	}
}

// An upgrade at a path that serves no WebSocket is refused with 404 and
// reported; other requests reach the wrapped handler.
func TestWrongPathHandler(t *testing.T) {
	var reasons []string
	h := WrongPathHandler([]string{"/mqtt"}, func(_ *http.Request, reason string) { reasons = append(reasons, reason) },
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("dashboard")) }))
	r := httptest.NewRequest("GET", "/ws", nil)
	r.Header.Set("Upgrade", "websocket")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 404 || !strings.Contains(w.Body.String(), "connect to /mqtt") || len(reasons) != 1 || reasons[0] != RefusedWrongPath {
		t.Fatalf("upgrade at /ws: %d %q, reported %v", w.Code, w.Body, reasons)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Body.String() != "dashboard" || len(reasons) != 1 {
		t.Fatalf("plain request: %q, reported %v", w.Body, reasons)
	}
}
