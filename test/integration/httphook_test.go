package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth/httpauth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// hookBackend is an application's auth endpoint: user "app" with password
// "s3cret" may connect, publish and subscribe under app/<user>/; the
// requests it got are kept.
type hookBackend struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []httpauth.Request
}

func (b *hookBackend) requests(action string) []httpauth.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []httpauth.Request
	for _, r := range b.reqs {
		if r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

func newHookBackend(t *testing.T) *hookBackend {
	b := &hookBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req httpauth.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.reqs = append(b.reqs, req)
		b.mu.Unlock()
		ok := false
		switch req.Action {
		case httpauth.ActionConnect:
			ok = req.Username == "app" && req.Password == "s3cret"
		default:
			ok = strings.HasPrefix(req.Topic, "app/"+req.Username+"/")
		}
		if !ok {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(httpauth.Answer{Result: httpauth.Allow})
	}))
	t.Cleanup(b.Close)
	return b
}

// Through a whole broker: the backend lets a user in or refuses it (0x86),
// answers about each publish and subscription (authorize), and a client
// reconnecting with the same credentials is answered from the cache.
func TestHTTPHook(t *testing.T) {
	t.Parallel()
	b := newHookBackend(t)
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Auth.AllowAnonymous = false
		c.Auth.HTTP.URL = b.URL + "/mqtt-auth"
		c.Auth.HTTP.Authorize = true
	})
	login := func(pass string) *paho.Connect {
		return &paho.Connect{CleanStart: true, KeepAlive: 30, UsernameFlag: true, Username: "app", PasswordFlag: true, Password: []byte(pass)}
	}
	if c, ack := dialV5(t, addr, "hook-bad", login("wrong")); c != nil || ack == nil || ack.ReasonCode != byte(packet.BadUsernameOrPassword) {
		t.Fatalf("denied user: CONNACK %+v, want 0x86", ack)
	}
	c, ack := dialV5(t, addr, "hook-ok", login("s3cret"))
	if c == nil {
		t.Fatalf("allowed user: CONNACK %+v", ack)
	}
	conns := b.requests("connect")
	if len(conns) != 2 {
		t.Fatalf("backend got %d connects, want 2", len(conns))
	}
	if r := conns[1]; r.ClientID != "hook-ok" || r.Listener != "tcp" || !strings.HasPrefix(r.Remote, "127.0.0.1:") || r.ProtocolVersion != 5 {
		t.Fatalf("connect request %+v", r)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "app/app/#", QoS: 1}, {Topic: "other/#", QoS: 1}}})
	if sa == nil || string(sa.Reasons) != "\x01\x87" {
		t.Fatalf("SUBACK %+v, want 01 87 (own tree allowed, the rest denied by the backend)", sa)
	}
	for topic, code := range map[string]byte{"app/app/x": 0, "other/x": 0x87} {
		r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("v")})
		if r == nil || r.ReasonCode != code {
			t.Fatalf("publish %s: %+v %v, want 0x%02x", topic, r, err, code)
		}
	}
	if p := c.expect(t); p.Topic != "app/app/x" {
		t.Fatalf("got %s", p.Topic)
	}
	if n := len(b.requests("publish")); n != 2 {
		t.Fatalf("backend got %d publish requests, want 2", n)
	}
	c.Disconnect(&paho.Disconnect{})

	// The same credentials again, from another port: the cached allow.
	c2, ack := dialV5(t, addr, "hook-ok", login("s3cret"))
	if c2 == nil {
		t.Fatalf("reconnect: CONNACK %+v", ack)
	}
	if n := len(b.requests("connect")); n != 2 {
		t.Fatalf("backend got %d connects after a reconnect, want 2 (cached)", n)
	}
}
