package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
)

// denyAuth refuses the password "wrong" and denies topics under secret/.
type denyAuth struct{}

func (denyAuth) Authenticate(_ context.Context, c *broker.ConnectInfo) (broker.Identity, packet.ReasonCode, error) {
	if string(c.Password) == "wrong" {
		return broker.Identity{}, packet.BadUsernameOrPassword, nil
	}
	return broker.Identity{Username: c.Username}, packet.Success, nil
}

func (denyAuth) Allow(_ *broker.ClientInfo, _ broker.Action, topic string) bool {
	return !strings.HasPrefix(topic, "secret/")
}

// Refused logins and ACL denials reach the broker's event history (the
// API and the events feed), a retrying client's repeats counted in one
// entry; the history is bounded.
func TestEventHistory(t *testing.T) {
	b, addr := startBrokerWith(t, func(b *broker.Broker) { b.SetAuth(denyAuth{}, denyAuth{}) })
	a := New(b, Options{Checker: StaticChecker{"admin", "s3cret"}})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)

	for range 3 { // the same refused login, three times
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{ClientID: "intruder", Conn: nc})
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		ack, err := c.Connect(ctx, &paho.Connect{ClientID: "intruder", Username: "mallory", UsernameFlag: true, Password: []byte("wrong"), PasswordFlag: true, KeepAlive: 30})
		cancel()
		if err == nil && ack.ReasonCode == 0 {
			t.Fatal("login with a wrong password accepted")
		}
		nc.Close()
	}
	c := dial(t, addr, "nosy")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "secret/#", QoS: 1}}})
	c.Publish(ctx, &paho.Publish{Topic: "secret/plans", QoS: 1, Payload: []byte("x")})

	var got EventsFeed
	waitFor(t, "three kinds of events", func() bool {
		_, body, _ := do(t, srv, "GET", "/api/v1/events", creds, "")
		got = EventsFeed{}
		json.Unmarshal([]byte(body), &got)
		return got.Totals[broker.EventConnectRefused] == 3 && got.Totals[broker.EventSubscribeDenied] == 1 && got.Totals[broker.EventPublishDenied] == 1
	})
	if len(got.Events) != 3 {
		t.Fatalf("%d entries, want 3 (repeats counted in one): %+v", len(got.Events), got.Events)
	}
	pub, sub, login := got.Events[0], got.Events[1], got.Events[2] // newest first
	if login.Kind != broker.EventConnectRefused || login.Count != 3 || login.ClientID != "intruder" || login.Username != "mallory" ||
		!strings.Contains(login.Reason, "0x86") || login.Remote == "" || login.First > login.Time {
		t.Errorf("refused login: %+v", login)
	}
	if sub.Kind != broker.EventSubscribeDenied || sub.Topic != "secret/#" || sub.ClientID != "nosy" {
		t.Errorf("subscribe denied: %+v", sub)
	}
	if pub.Kind != broker.EventPublishDenied || pub.Topic != "secret/plans" || pub.Reason != "not authorized" {
		t.Errorf("publish denied: %+v", pub)
	}
	if _, body, _ := do(t, srv, "GET", "/api/v1/events?kind=connect_refused", creds, ""); strings.Contains(body, "secret/") {
		t.Errorf("kind filter: %s", body)
	}

	// The feed carries the same to a subscriber.
	watcher := dial(t, addr, "watcher")
	watcher.subscribe(t, FeedEvents)
	if err := a.feed.tick(time.Now()); err != nil {
		t.Fatal(err)
	}
	var feed EventsFeed
	if err := json.Unmarshal(watcher.next(t, FeedEvents).Payload, &feed); err != nil || len(feed.Events) != 3 {
		t.Errorf("feed: %v %+v", err, feed)
	}

	// Bounded: many distinct events keep the newest maxEventLog.
	for i := range maxEventLog + 50 {
		a.RecordEvent(broker.Event{Kind: "test", ClientID: fmt.Sprint(i)})
	}
	evs, totals, _ := a.events.list("", 10000)
	if len(evs) != maxEventLog || evs[0].ClientID != fmt.Sprint(maxEventLog+49) || totals["test"] != maxEventLog+50 {
		t.Errorf("%d kept, newest %q, total %d", len(evs), evs[0].ClientID, totals["test"])
	}
}

// startBrokerWith is startBroker with setup applied before it serves.
func startBrokerWith(t *testing.T, setup func(*broker.Broker)) (*broker.Broker, string) {
	t.Helper()
	b := broker.New(config.Default().Limits, nil)
	setup(b)
	return b, brokertest.Serve(t, b)
}

// A slow-consumer policy action reaches the event history: a subscriber
// with Receive Maximum 1 that acknowledges nothing, its queue full, is
// disconnected after slow_consumer.timeout.
func TestEventHistorySlowConsumer(t *testing.T) {
	lim := config.Default().Limits
	lim.MaxQueued = 2
	b := broker.New(lim, nil)
	b.SetFlow(config.SlowConsumer{Timeout: 200 * time.Millisecond, Policy: "disconnect"}, nil, 0)
	addr := brokertest.Serve(t, b)
	a := New(b, Options{})

	nc := dialTCP(t, addr)
	lag := paho.NewClient(paho.ClientConfig{ClientID: "stuck", Conn: nc, EnableManualAcknowledgment: true})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	rm := uint16(1)
	if _, err := lag.Connect(ctx, &paho.Connect{ClientID: "stuck", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lag.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "jam/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pub := dial(t, addr, "pusher")
	go func() { // held once the queue is full, until the policy acts
		for i := 0; i < 10 && ctx.Err() == nil; i++ {
			pub.Publish(ctx, &paho.Publish{Topic: "jam/1", QoS: 1, Payload: []byte("x")})
		}
	}()
	waitFor(t, "a slow_consumer event", func() bool {
		evs, _, _ := a.events.list(broker.EventSlowConsumer, 10)
		return len(evs) > 0
	})
	evs, _, _ := a.events.list(broker.EventSlowConsumer, 10)
	if e := evs[0]; e.ClientID != "stuck" || !strings.HasPrefix(e.Reason, "disconnected: took nothing for") {
		t.Errorf("event %+v", e)
	}
}
