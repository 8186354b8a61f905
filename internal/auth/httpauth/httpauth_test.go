package httpauth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/auth/authconfig"
)

// backend is a loopback HTTP server standing in for an application's
// backend: it counts calls and answers with decide.
type backend struct {
	*httptest.Server
	calls atomic.Int64
	last  atomic.Pointer[Request]
	user  atomic.Pointer[string]
}

func newBackend(t *testing.T, decide func(w http.ResponseWriter, r *Request)) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		b.calls.Add(1)
		if u, p, ok := hr.BasicAuth(); ok {
			s := u + ":" + p
			b.user.Store(&s)
		}
		var r Request
		if hr.Method != http.MethodPost || hr.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		if err := json.NewDecoder(hr.Body).Decode(&r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.last.Store(&r)
		decide(w, &r)
	}))
	t.Cleanup(b.Close)
	return b
}

func answer(w http.ResponseWriter, a Answer) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(a)
}

// byPassword allows password "good", denies anything else.
func byPassword(w http.ResponseWriter, r *Request) {
	if r.Action == ActionConnect && r.Password == "good" {
		answer(w, Answer{Result: Allow, Superuser: r.Username == "root"})
		return
	}
	answer(w, Answer{Result: Deny})
}

func newHook(t *testing.T, url string, mod func(*authconfig.HTTP)) *Hook {
	t.Helper()
	cfg := authconfig.DefaultHTTP()
	cfg.URL = url
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func connect(user, pass string) *Request {
	r := &Request{Action: ActionConnect, ClientID: "c1", Username: user, Remote: "127.0.0.1:50000", Listener: "tcp", ProtocolVersion: 5}
	r.SetPassword([]byte(pass))
	return r
}

func TestAllowAndDeny(t *testing.T) {
	b := newBackend(t, byPassword)
	h := newHook(t, strings.Replace(b.URL, "http://", "http://broker:s3cret@", 1), nil)
	a, err := h.Ask(context.Background(), connect("root", "good"))
	if err != nil || a.Result != Allow || !a.Superuser {
		t.Fatalf("good password: %+v, %v; want allow, superuser", a, err)
	}
	got := b.last.Load()
	if got.Action != "connect" || got.ClientID != "c1" || got.Username != "root" || got.Password != "good" ||
		got.Remote != "127.0.0.1:50000" || got.Listener != "tcp" || got.ProtocolVersion != 5 {
		t.Fatalf("backend got %+v", got)
	}
	if u := b.user.Load(); u == nil || *u != "broker:s3cret" {
		t.Fatalf("backend's own credentials not sent as Basic authentication: %v", u)
	}
	a, err = h.Ask(context.Background(), connect("root", "bad"))
	if err != nil || a.Result != Deny {
		t.Fatalf("bad password: %+v, %v; want deny", a, err)
	}
	// A password that is not UTF-8 travels in base64.
	h.Ask(context.Background(), connect("root", "\xff\xfe"))
	if got := b.last.Load(); got.Password != "" || got.PasswordBase64 != "//4=" {
		t.Fatalf("binary password sent as %+v", got)
	}
}

// Statuses other than 200 with a result: 204 allows, 401 and 403 deny,
// others (and malformed answers) are errors.
func TestStatusesAndBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, result, err string
		h                 http.HandlerFunc
	}{
		{"204", Allow, "", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }},
		{"401", Deny, "", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(401) }},
		{"403", Deny, "", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(403) }},
		{"500", "", "backend answered 500", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }},
		{"redirect", "", "backend answered 302", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/elsewhere", 302) }},
		{"not json", "", "not the expected JSON", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("yes")) }},
		{"bad result", "", `got "maybe"`, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"result":"maybe"}`)) }},
		{"ignore", Ignore, "", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"result":"ignore"}`)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := httptest.NewServer(tc.h)
			defer s.Close()
			h := newHook(t, s.URL, nil)
			a, err := h.Ask(context.Background(), connect("u", "p"))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want error containing %q", a, err, tc.err)
				}
				return
			}
			if err != nil || a.Result != tc.result {
				t.Fatalf("got %+v, %v; want %s", a, err, tc.result)
			}
		})
	}
}

// A backend that never answers costs one timeout, then an error.
func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *Request) { <-release })
	t.Cleanup(func() { close(release) }) // before the server's Close (cleanups run last first)
	h := newHook(t, b.URL, func(c *authconfig.HTTP) { c.Timeout = 100 * time.Millisecond })
	start := time.Now()
	a, err := h.Ask(context.Background(), connect("u", "good"))
	if err == nil || !strings.Contains(err.Error(), "no answer within 100ms") {
		t.Fatalf("hanging backend: %+v, %v; want a timeout error", a, err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("gave up after %s, before the timeout", el)
	}
	if h.Stats.Error.Load() != 1 {
		t.Fatalf("errors counted: %d", h.Stats.Error.Load())
	}
	// A failed call is not cached: the next one asks again.
	h.Ask(context.Background(), connect("u", "good"))
	if n := b.calls.Load(); n != 2 {
		t.Fatalf("%d backend calls, want 2 (errors are not cached)", n)
	}
}

// Answers are reused for their TTL (allow and deny apart), per distinct
// request; the cache keeps at most cache_size answers.
func TestCache(t *testing.T) {
	b := newBackend(t, byPassword)
	now := time.Unix(1000, 0)
	h := newHook(t, b.URL, func(c *authconfig.HTTP) {
		c.CacheSize, c.AllowTTL, c.DenyTTL = 2, time.Minute, 10*time.Second
	})
	h.Now = func() time.Time { return now }
	ask := func(user, pass, want string) {
		t.Helper()
		a, err := h.Ask(context.Background(), connect(user, pass))
		if err != nil || a.Result != want {
			t.Fatalf("%s/%s: %+v, %v; want %s", user, pass, a, err, want)
		}
	}
	calls := func(want int64) {
		t.Helper()
		if n := b.calls.Load(); n != want {
			t.Fatalf("%d backend calls, want %d", n, want)
		}
	}
	ask("a", "good", Allow)
	ask("a", "good", Allow)
	calls(1)
	ask("a", "bad", Deny) // another password is another request
	ask("a", "bad", Deny)
	calls(2)
	// The same client from another port of the same address: cached.
	r := connect("a", "good")
	r.Remote = "127.0.0.1:60000"
	h.Ask(context.Background(), r)
	calls(2)
	if h.Stats.CacheHits.Load() != 3 {
		t.Fatalf("cache hits %d, want 3", h.Stats.CacheHits.Load())
	}

	now = now.Add(11 * time.Second) // past the deny TTL, within the allow TTL
	ask("a", "good", Allow)
	calls(2)
	ask("a", "bad", Deny)
	calls(3)
	now = now.Add(time.Minute) // past both
	ask("a", "good", Allow)
	calls(4)

	// Bounded: a third distinct request pushes out the least recently used.
	ask("a", "bad", Deny)   // fresh: call 5
	ask("b", "good", Allow) // call 6: "a"/"good" (least recently used) goes
	calls(6)
	if n := h.cache.len(); n != 2 {
		t.Fatalf("cache holds %d answers, want at most 2", n)
	}
	ask("a", "bad", Deny)
	calls(6)
	ask("a", "good", Allow)
	calls(7)

	h.Purge()
	ask("b", "good", Allow)
	calls(8)
}

// Without a cache every request reaches the backend.
func TestNoCache(t *testing.T) {
	b := newBackend(t, byPassword)
	h := newHook(t, b.URL, func(c *authconfig.HTTP) { c.CacheSize = 0 })
	for range 3 {
		h.Ask(context.Background(), connect("a", "good"))
	}
	if n := b.calls.Load(); n != 3 {
		t.Fatalf("%d backend calls, want 3", n)
	}
}
