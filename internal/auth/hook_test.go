package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/auth/httpauth"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// appBackend is an application's auth endpoint on loopback: users
// "web:pw" (allowed, with topic lists when lists is set), "ghost" and
// clients without a user name (ignored); everyone else denied. A connect from user "hang" never gets
// an answer; "fail" gets a 500.
type appBackend struct {
	*httptest.Server
	calls   atomic.Int64
	actions chan httpauth.Request // publish and subscribe requests
	lists   bool
}

func newAppBackend(t *testing.T) *appBackend {
	t.Helper()
	b := &appBackend{actions: make(chan httpauth.Request, 16)}
	release := make(chan struct{})
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.calls.Add(1)
		var req httpauth.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		var a httpauth.Answer
		switch {
		case req.Action != httpauth.ActionConnect:
			b.actions <- req
			a.Result = httpauth.Deny
			if strings.HasPrefix(req.Topic, "app/"+req.Username+"/") {
				a.Result = httpauth.Allow
			}
		case req.Username == "hang":
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		case req.Username == "fail":
			w.WriteHeader(500)
			return
		case req.Username == "web" && req.Password == "pw":
			a.Result = httpauth.Allow
			if b.lists {
				a.Publish, a.Subscribe = []string{"app/%u/out"}, []string{"app/%u/#"}
			}
		case req.Username == "ghost" || req.Username == "":
			a.Result = httpauth.Ignore
		default:
			a.Result = httpauth.Deny
		}
		json.NewEncoder(w).Encode(a)
	}))
	t.Cleanup(b.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets a hung handler end
	return b
}

func hookConfig(url string, mod func(*Config)) Config {
	cfg := DefaultConfig()
	cfg.AllowAnonymous = false
	cfg.HTTP.URL = url
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

func noCreds() *broker.ConnectInfo {
	return &broker.ConnectInfo{ClientID: "c1", Version: 5, Remote: remote}
}

func TestHookAllowDeny(t *testing.T) {
	b := newAppBackend(t)
	a, lb := newAuth(t, hookConfig(b.URL, nil))
	defer a.Close()
	id, code, err := a.Authenticate(context.Background(), login("web", "pw"))
	if err != nil || code != packet.Success || id.Username != "web" || id.Anonymous {
		t.Fatalf("allowed user: %+v 0x%02x %v", id, byte(code), err)
	}
	if _, code, _ = a.Authenticate(context.Background(), login("web", "nope")); code != packet.BadUsernameOrPassword {
		t.Fatalf("denied user: 0x%02x, want 0x86", byte(code))
	}
	if _, code, _ = a.Authenticate(context.Background(), noCreds()); code != packet.NotAuthorized {
		t.Fatalf("anonymous client, ignored, anonymous access off: 0x%02x, want 0x87", byte(code))
	}
	if !strings.Contains(lb.String(), `username=web remote=192.0.2.9:40000 reason="http hook: denied"`) {
		t.Fatalf("no audit line for the denial:\n%s", lb)
	}
	// An ignore falls through; nothing after it admits a user name.
	if _, code, _ = a.Authenticate(context.Background(), login("ghost", "x")); code != packet.BadUsernameOrPassword {
		t.Fatalf("ignored user: 0x%02x, want 0x86", byte(code))
	}
	if !strings.Contains(lb.String(), `reason="http hook: ignored"`) {
		t.Fatalf("no audit line for the ignored user:\n%s", lb)
	}
}

// A backend that hangs or fails: with on_error deny the client is refused
// with 0x88 at the hook's timeout; with next, the next authenticator (the
// password file here) decides.
func TestHookFailureMode(t *testing.T) {
	b := newAppBackend(t)
	pf := writeFile(t, t.TempDir(), "passwd", "hang:"+mustHash(t, "secret")+"\nfail:"+mustHash(t, "secret")+"\n")
	for _, mode := range []string{"deny", "next"} {
		t.Run(mode, func(t *testing.T) {
			a, lb := newAuth(t, hookConfig(b.URL, func(c *Config) {
				c.HTTP.Timeout, c.HTTP.OnError = 200*time.Millisecond, mode
				c.PasswordFile = pf
				c.Order = []string{AuthHTTP, AuthPasswordFile, AuthJWT, AuthAnonymous}
			}))
			defer a.Close()
			for _, user := range []string{"hang", "fail"} {
				start := time.Now()
				id, code, _ := a.Authenticate(context.Background(), login(user, "secret"))
				el := time.Since(start)
				switch mode {
				case "deny":
					if code != packet.ServerUnavailable {
						t.Fatalf("%s: 0x%02x, want 0x88", user, byte(code))
					}
				case "next":
					if code != packet.Success || id.Username != user {
						t.Fatalf("%s: %+v 0x%02x, want the password file's success", user, id, byte(code))
					}
				}
				if user == "hang" && el < 200*time.Millisecond {
					t.Fatalf("hanging backend: decided after %s, before the timeout", el)
				}
			}
			if mode == "deny" && !strings.Contains(lb.String(), `reason="http hook: no answer within 200ms"`) {
				t.Fatalf("no audit line for the timeout:\n%s", lb)
			}
		})
	}
}

// The order decides who is asked first: a user of the password file is
// not sent to the backend when the file comes first, and is when the hook
// does; an unknown user goes on to the hook, never to anonymous access.
func TestAuthOrder(t *testing.T) {
	b := newAppBackend(t)
	pf := writeFile(t, t.TempDir(), "passwd", "alice:"+mustHash(t, "wonderland")+"\n")
	fileFirst, _ := newAuth(t, hookConfig(b.URL, func(c *Config) {
		c.PasswordFile, c.AllowAnonymous = pf, true
		c.HTTP.CacheSize = 0
	}))
	defer fileFirst.Close()
	if _, code, _ := fileFirst.Authenticate(context.Background(), login("alice", "wonderland")); code != packet.Success || b.calls.Load() != 0 {
		t.Fatalf("file first, file user: 0x%02x after %d backend calls, want success and none", byte(code), b.calls.Load())
	}
	if _, code, _ := fileFirst.Authenticate(context.Background(), login("alice", "wrong")); code != packet.BadUsernameOrPassword || b.calls.Load() != 0 {
		t.Fatalf("file first, wrong password: 0x%02x after %d backend calls, want 0x86 from the file alone", byte(code), b.calls.Load())
	}
	if id, code, _ := fileFirst.Authenticate(context.Background(), login("web", "pw")); code != packet.Success || id.Username != "web" || b.calls.Load() != 1 {
		t.Fatalf("file first, backend user: %+v 0x%02x after %d calls", id, byte(code), b.calls.Load())
	}
	// Ignored by the hook and unknown to the file: anonymous access is on,
	// but a name the file does not know is not let in as anonymous.
	if _, code, _ := fileFirst.Authenticate(context.Background(), login("ghost", "x")); code != packet.BadUsernameOrPassword {
		t.Fatalf("unknown everywhere: 0x%02x, want 0x86", byte(code))
	}
	if id, code, _ := fileFirst.Authenticate(context.Background(), noCreds()); code != packet.Success || !id.Anonymous {
		t.Fatalf("no user name: %+v 0x%02x, want anonymous", id, byte(code))
	}

	hookFirst, _ := newAuth(t, hookConfig(b.URL, func(c *Config) {
		c.PasswordFile = pf
		c.HTTP.CacheSize = 0
		c.Order = []string{AuthHTTP, AuthPasswordFile}
	}))
	defer hookFirst.Close()
	before := b.calls.Load()
	// The backend denies alice: it is asked first and decides.
	if _, code, _ := hookFirst.Authenticate(context.Background(), login("alice", "wonderland")); code != packet.BadUsernameOrPassword || b.calls.Load() != before+1 {
		t.Fatalf("hook first, file user: 0x%02x after %d new calls, want the backend's deny", byte(code), b.calls.Load()-before)
	}
}

// Order validation names the key.
func TestAuthOrderValidation(t *testing.T) {
	for _, tc := range []struct {
		order []string
		mod   func(*Config)
		want  string
	}{
		{[]string{"password_file", "ldap"}, nil, `auth.order[1]: must be one of password_file, jwt, http, anonymous (got "ldap")`},
		{[]string{"jwt", "jwt", "anonymous"}, nil, "auth.order[1]: jwt is listed twice"},
		{[]string{"password_file"}, nil, "auth.order: anonymous is configured but not listed"},
		{[]string{"anonymous"}, func(c *Config) { c.HTTP.URL = "http://127.0.0.1:1/auth" }, "auth.order: http is configured but not listed"},
		{[]string{"anonymous"}, func(c *Config) { c.HTTP.OnError = "retry" }, `auth.http.on_error: must be deny or next (got "retry")`},
		{[]string{"anonymous"}, func(c *Config) { c.HTTP.URL = "ftp://x/" }, "auth.http.url: must be an http:// or https:// URL"},
	} {
		cfg := DefaultConfig()
		cfg.Order = tc.order
		if tc.mod != nil {
			tc.mod(&cfg)
		}
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("order %v: %v, want %q", tc.order, err, tc.want)
		}
	}
}

// The backend's topic lists limit the client (%u substituted); without
// lists, authorize asks the backend about each publish and subscription.
func TestHookPermissions(t *testing.T) {
	b := newAppBackend(t)
	b.lists = true
	a, _ := newAuth(t, hookConfig(b.URL, nil))
	defer a.Close()
	id, code, _ := a.Authenticate(context.Background(), login("web", "pw"))
	if code != packet.Success || id.Perms == nil {
		t.Fatalf("login: %+v 0x%02x, want permissions from the answer", id, byte(code))
	}
	ci := &broker.ClientInfo{ClientID: "c1", Identity: id}
	for _, tc := range []struct {
		act   broker.Action
		topic string
		want  bool
	}{
		{broker.ActPublish, "app/web/out", true},
		{broker.ActPublish, "app/web/in", false},
		{broker.ActSubscribe, "app/web/#", true},
		{broker.ActRead, "app/web/x", true},
		{broker.ActSubscribe, "app/other/#", false},
	} {
		if got := id.Perms.Allow(ci, tc.act, tc.topic); got != tc.want {
			t.Errorf("lists: %v %s = %v, want %v", tc.act, tc.topic, got, tc.want)
		}
	}

	b.lists = false
	z, _ := newAuth(t, hookConfig(b.URL, func(c *Config) { c.HTTP.Authorize = true }))
	defer z.Close()
	id, code, _ = z.Authenticate(context.Background(), login("web", "pw"))
	if code != packet.Success || id.Perms == nil {
		t.Fatalf("login with authorize: %+v 0x%02x", id, byte(code))
	}
	ci = &broker.ClientInfo{ClientID: "c1", Identity: id, Remote: "192.0.2.9:40000"}
	if !id.Perms.Allow(ci, broker.ActPublish, "app/web/x") {
		t.Fatal("publish the backend allows was denied")
	}
	if got := <-b.actions; got.Action != "publish" || got.Topic != "app/web/x" || got.Username != "web" || got.ClientID != "c1" {
		t.Fatalf("backend asked %+v", got)
	}
	if id.Perms.Allow(ci, broker.ActSubscribe, "other/#") {
		t.Fatal("subscription the backend denies was allowed")
	}
	if got := <-b.actions; got.Action != "subscribe" || got.Topic != "other/#" {
		t.Fatalf("backend asked %+v", got)
	}
	if !id.Perms.Allow(ci, broker.ActRead, "other/x") || len(b.actions) != 0 {
		t.Fatal("a delivery must not be sent to the backend")
	}
}
