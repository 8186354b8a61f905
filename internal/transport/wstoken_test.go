package transport

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRequestToken(t *testing.T) {
	r := httptest.NewRequest("GET", "http://b.test/mqtt?access_token=from-url", nil)
	r.AddCookie(&http.Cookie{Name: "tok", Value: "from-cookie"})
	for _, tc := range []struct {
		query  bool
		cookie string
		want   string
	}{
		{false, "", ""},
		{true, "", "from-url"},
		{false, "tok", "from-cookie"},
		{true, "tok", "from-url"},
		{false, "other", ""},
	} {
		if got := string(RequestToken(r, tc.query, tc.cookie)); got != tc.want {
			t.Errorf("RequestToken(query %v, cookie %q) = %q, want %q", tc.query, tc.cookie, got, tc.want)
		}
	}
}

// OnOriginRefused hears of each upgrade refused for its Origin, and only of
// those.
func TestWSOnOriginRefused(t *testing.T) {
	var refused []string
	h := NewWSHandler(WSOptions{AllowedOrigins: []string{"https://ok.example"}, OnOriginRefused: func(r *http.Request) {
		refused = append(refused, r.Header.Get("Origin"))
	}}, func(c net.Conn, _ *http.Request) { c.Close() })
	for _, origin := range []string{"https://evil.example", "https://ok.example"} {
		r := httptest.NewRequest("GET", "http://b.test/mqtt", nil)
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Origin", origin)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if origin == "https://evil.example" && w.Code != http.StatusForbidden {
			t.Fatalf("%s: status %d, want 403", origin, w.Code)
		}
	}
	if len(refused) != 1 || refused[0] != "https://evil.example" {
		t.Fatalf("OnOriginRefused saw %q, want only the refused origin", refused)
	}
}
