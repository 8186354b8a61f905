package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The client search runs over every session in the broker, past the
// first page, by client ID, user name or address, a page at a time; the
// client's page carries its subscription options, will, listener and last
// disconnect reason; DELETE ends a session.
func TestClientSearchPagingDelete(t *testing.T) {
	b, addr := startBroker(t)
	a := New(b, Options{Checker: StaticChecker{"admin", "s3cret"}})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	// 250 offline sessions, then one connected client with a will and
	// options: more than the 200 the feeds carry.
	for i := range 250 {
		c := dial(t, addr, fmt.Sprintf("bulk-%03d", i))
		c.close()
	}
	// Closed by the clients: wait until the broker has seen every one end,
	// or a late one still matches a search by address.
	waitFor(t, "the bulk connections to end", func() bool { return b.Stats.Connections.Load() == 0 })
	nc := dialTCP(t, addr)
	c := paho.NewClient(paho.ClientConfig{ClientID: "zz-needle", Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	expiry, delay := uint32(600), uint32(300)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "zz-needle", CleanStart: true, KeepAlive: 30, Username: "Operator-Jo", UsernameFlag: true,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage:    &paho.WillMessage{Topic: "dead/zz", Payload: []byte("gone"), QoS: 1, Retain: true},
		WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cmd/#", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}}}); err != nil {
		t.Fatal(err)
	}
	get := func(path string) ClientsPage {
		t.Helper()
		code, body, _ := do(t, srv, "GET", path, creds, "")
		var p ClientsPage
		if err := json.Unmarshal([]byte(body), &p); code != 200 || err != nil {
			t.Fatalf("%s: %d %v %s", path, code, err, body)
		}
		return p
	}
	for _, q := range []string{"needle", "operator-jo", "OPERATOR", "127.0.0.1"} {
		p := get("/api/v1/clients?q=" + q)
		if p.Total != 1 || len(p.Clients) != 1 || p.Clients[0].ClientID != "zz-needle" {
			t.Errorf("q=%s: %+v", q, p)
		}
	}
	x := get("/api/v1/clients?q=needle").Clients[0]
	if x.Listener != "" || x.Will == nil || x.Will.Topic != "dead/zz" || x.Will.QoS != 1 || !x.Will.Retain || x.Will.PayloadBytes != 4 ||
		x.SessionExpiry != 600 || x.ConnectedAt == nil || x.DisconnectWhy != "" {
		t.Errorf("client page: %+v will %+v", x, x.Will)
	}
	if len(x.Subscriptions) != 1 || s0(x).Filter != "cmd/#" || !s0(x).NoLocal || !s0(x).RetainAsPublished || s0(x).RetainHandling != 2 {
		t.Errorf("subscription options: %+v", x.Subscriptions)
	}
	if p := get("/api/v1/clients?q=nobody-at-all"); p.Total != 0 || len(p.Clients) != 0 {
		t.Errorf("no match: %+v", p)
	}
	if code, _, _ := do(t, srv, "GET", "/api/v1/clients?limit=0", creds, ""); code != 400 {
		t.Errorf("limit=0: %d", code)
	}

	// Kicked: the last disconnect reason is kept while the session waits.
	if code, _, _ := do(t, srv, "POST", "/api/v1/clients/zz-needle/kick", creds, ""); code != 200 {
		t.Fatalf("kick: %d", code)
	}
	waitFor(t, "the kicked session offline", func() bool { s, _ := b.Client("zz-needle"); return !s.Connected && s.DisconnectReason != "" })
	if x := get("/api/v1/clients?q=needle").Clients[0]; x.DisconnectWhy != "kicked by admin" || x.DisconnectedAt == nil ||
		x.Will == nil || x.Will.DelaySeconds != 300 {
		t.Errorf("after kick: reason %q at %v, will %+v", x.DisconnectWhy, x.DisconnectedAt, x.Will)
	}
	// Delete: gone, and the pending will was not published.
	watcher := dial(t, addr, "watcher")
	watcher.subscribe(t, "dead/#")
	code, body, _ := do(t, srv, "DELETE", "/api/v1/clients/zz-needle", creds, "")
	if code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if _, ok := b.Client("zz-needle"); ok {
		t.Error("session still there after delete")
	}
	if code, _, _ := do(t, srv, "DELETE", "/api/v1/clients/zz-needle", creds, ""); code != 404 {
		t.Errorf("second delete: %d", code)
	}
	if code, _, _ := do(t, srv, "DELETE", "/api/v1/clients/watcher", "", ""); code != 401 {
		t.Errorf("delete without credentials: %d", code)
	}
	watcher.publish(t, "dead/probe", "p", false)
	if p := watcher.next(t, "dead/"); p.Topic != "dead/probe" {
		t.Errorf("the deleted session's will was published: %s", p.Topic)
	}
}

// Paging walks every session once, in client ID order, past 200.
func TestClientPages(t *testing.T) {
	b, addr := startBroker(t)
	a := New(b, Options{Checker: StaticChecker{"admin", "s3cret"}})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	for i := range 230 {
		dial(t, addr, fmt.Sprintf("dev-%03d", i))
	}
	seen := 0
	for off := 0; ; off += 100 {
		_, body, _ := do(t, srv, "GET", fmt.Sprintf("/api/v1/clients?q=dev-&limit=100&offset=%d", off), creds, "")
		var p ClientsPage
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatal(err)
		}
		if p.Total != 230 {
			t.Fatalf("total %d", p.Total)
		}
		for i, c := range p.Clients {
			if want := fmt.Sprintf("dev-%03d", off+i); c.ClientID != want {
				t.Fatalf("offset %d item %d: %s, want %s", off, i, c.ClientID, want)
			}
		}
		seen += len(p.Clients)
		if len(p.Clients) < 100 {
			break
		}
	}
	if seen != 230 {
		t.Errorf("walked %d sessions, want 230", seen)
	}
}

func s0(c Client) Subscription { return c.Subscriptions[0] }
