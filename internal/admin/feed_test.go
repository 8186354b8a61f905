package admin

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/metrics"
)

func TestFeeds(t *testing.T) {
	b, addr := startBroker(t)
	f := newFeed(b, metrics.FromBroker(b), "test", time.Now())
	t0 := time.Now()

	// Nobody watches: the overview goes out (to no one), the client list
	// is not computed.
	if err := f.tick(t0); err != nil {
		t.Fatal(err)
	}
	if f.connected != nil {
		t.Fatal("client list computed with nobody watching")
	}

	page := dial(t, addr, "page")
	page.subscribe(t, "$SYS/starling/dashboard/#")
	if err := f.tick(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	var o Overview
	if err := json.Unmarshal(page.next(t, FeedOverview).Payload, &o); err != nil {
		t.Fatal(err)
	}
	if o.ClientsConnected != 1 || o.Sessions != 1 || o.Subscriptions != 1 || o.Version != "test" {
		t.Errorf("overview: %+v", o)
	}
	var cf ClientsFeed
	if err := json.Unmarshal(page.next(t, FeedClients).Payload, &cf); err != nil {
		t.Fatal(err)
	}
	if len(cf.Connected) != 1 || cf.Connected[0].ClientID != "page" || cf.Connected[0].Subscriptions != 1 || len(cf.Events) != 0 {
		t.Errorf("first clients feed (no events for clients already there): %+v", cf)
	}

	// A client connects and publishes 10 messages; the next tick, 2 s
	// later, shows it, its connect event and a rate of 5/s in.
	other := dial(t, addr, "sensor-7")
	for range 10 {
		other.publish(t, "s/7", "x", false)
	}
	if err := f.tick(t0.Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(page.next(t, FeedOverview).Payload, &o); err != nil {
		t.Fatal(err)
	}
	if o.ClientsConnected != 2 || o.InPerSecond != 5 {
		t.Errorf("overview after traffic: %+v", o)
	}
	if err := json.Unmarshal(page.next(t, FeedClients).Payload, &cf); err != nil {
		t.Fatal(err)
	}
	if len(cf.Connected) != 2 || len(cf.Events) != 1 || cf.Events[0].Event != "connected" || cf.Events[0].ClientID != "sensor-7" || cf.Events[0].Remote == "" {
		t.Errorf("clients feed after a connect: %+v", cf)
	}

	other.close()
	deadline := time.Now().Add(5 * time.Second)
	for b.Stats.Connections.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := f.tick(t0.Add(4 * time.Second)); err != nil {
		t.Fatal(err)
	}
	page.next(t, FeedOverview)
	if err := json.Unmarshal(page.next(t, FeedClients).Payload, &cf); err != nil {
		t.Fatal(err)
	}
	if len(cf.Connected) != 1 || len(cf.Events) != 2 || cf.Events[0].Event != "disconnected" || cf.Events[0].ClientID != "sensor-7" {
		t.Errorf("clients feed after a disconnect: %+v", cf)
	}
}

// Run publishes the feeds at the configured interval and stops with ctx.
func TestRunStops(t *testing.T) {
	b, addr := startBroker(t)
	a := New(b, Options{FeedInterval: time.Second, SysInterval: time.Second, Version: "v"})
	page := dial(t, addr, "page")
	page.subscribe(t, "$SYS/#")
	done := make(chan struct{})
	runCtx, stop := context.WithCancel(t.Context())
	go func() { a.Run(runCtx); close(done) }()
	if p := page.next(t, "$SYS/broker/version"); string(p.Payload) != "starling v" {
		t.Errorf("version %q", p.Payload)
	}
	page.next(t, FeedOverview)
	stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestRunDisabled(t *testing.T) {
	b, addr := startBroker(t)
	a := New(b, Options{FeedInterval: -1, SysInterval: -1})
	page := dial(t, addr, "page")
	page.subscribe(t, "$SYS/#")
	ctx, stop := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer stop()
	a.Run(ctx) // returns at once: nothing to run
	select {
	case p := <-page.Recv:
		t.Errorf("published %s with $SYS and feeds off", p.Topic)
	case <-time.After(1200 * time.Millisecond):
	}
	if b.Retained() != 0 {
		t.Errorf("%d retained messages with $SYS off", b.Retained())
	}
}
