package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

func testLogger() *slog.Logger {
	lv := slog.LevelWarn
	if os.Getenv("STARLING_TEST_LOG") != "" {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
}

// clusterMember starts node i of a cluster whose nodes listen on routes,
// with its broker on st and JetStream in dir.
func clusterMember(t *testing.T, name string, routes []string, i int, st store.Store, dir string, lim config.Limits, log *slog.Logger) *testNode {
	t.Helper()
	var peers []string
	for j, r := range routes {
		if j != i {
			peers = append(peers, r)
		}
	}
	b := broker.New(lim, log)
	b.SetStore(st)
	n, err := Start(Config{Name: name, Node: fmt.Sprintf("u%d", i+1), Listen: routes[i], Peers: peers, DataDir: dir, Logger: log}, b)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.HandleConn(c)
		}
	}()
	tn := &testNode{b: b, n: n, addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close(); tn.stop() })
	return tn
}

// stop closes the node's broker and cluster member (once).
func (tn *testNode) stop() {
	tn.once.Do(func() {
		tn.b.Close(time.Second)
		tn.n.Close()
	})
}

func waitReady(t *testing.T, tn *testNode) {
	t.Helper()
	select {
	case <-tn.n.Ready():
	case <-time.After(60 * time.Second):
		t.Fatalf("node %s not ready", tn.n.Name())
	}
}

// A node restarted again and again while another node publishes to its
// restored persistent sessions never has the backplane touch its broker
// while the store loads (under -race, a concurrent restore and delivery
// is reported; without it, it was "concurrent map writes").
func TestRestartUnderTraffic(t *testing.T) {
	t.Parallel()
	const cycles, sessions = 20, 20
	routes := freeport.Addrs(t, "127.0.0.1", 3)
	log := testLogger()
	name := fmt.Sprintf("restart-%d", time.Now().UnixNano())
	st := memory.New()
	dir := t.TempDir()
	def := config.Default().Limits
	lim := def
	lim.MaxQueued, lim.MaxQueuedBytes = 1<<20, 1<<30 // every message kept: each restore loads more
	a := clusterMember(t, name, routes, 0, memory.New(), "", def, log)
	b := clusterMember(t, name, routes, 1, memory.New(), "", def, log)
	c := clusterMember(t, name, routes, 2, st, dir, lim, log)
	for _, tn := range []*testNode{a, b, c} {
		waitReady(t, tn)
	}
	for i := range sessions {
		parkSession(t, c.addr, fmt.Sprintf("r%d", i), "r/#")
	}
	waitIndexed(t, a, "r/x", "u3")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		payload := make([]byte, 64)
		tick := time.NewTicker(5 * time.Millisecond) // paced, not a flood
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := a.b.Publish("r/x", payload, 1, false); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	waitPending(t, c, 10*sessions)
	for range cycles {
		c.stop()
		// Start returns once the store is restored and the node runs:
		// messages from the publishing node arrive from then on, not
		// while the store loads.
		c = clusterMember(t, name, routes, 2, st, dir, lim, log)
		waitPending(t, c, pending(c.b)+1)
	}
}

// waitPending waits until tn's sessions hold at least count messages.
func waitPending(t *testing.T, tn *testNode, count int) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); pending(tn.b) < count; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d messages, want %d", tn.n.Name(), pending(tn.b), count)
		}
	}
}
