package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// gatedStore holds every commit while closed: a broker that cannot keep up.
type gatedStore struct {
	store.Store
	mu   sync.Mutex
	open chan struct{}
}

func newGatedStore() *gatedStore {
	g := &gatedStore{Store: memory.New(), open: make(chan struct{})}
	close(g.open)
	return g
}

// hold blocks every commit from now until release.
func (g *gatedStore) hold() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedStore) release() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

func (g *gatedStore) NewBatch() store.Batch { return gatedBatch{g.Store.NewBatch(), g} }

func (g *gatedStore) gate() chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

type gatedBatch struct {
	store.Batch
	g *gatedStore
}

func (b gatedBatch) Commit(sync bool) error {
	<-b.g.gate()
	return b.Batch.Commit(sync)
}

// When a node falls behind, the messages NATS drops for it are counted
// (mqtt_cluster_messages_dropped_total), not only logged: every message
// sent is either delivered or counted.
func TestSlowNodeDropsAreCounted(t *testing.T) {
	old := plainQueue
	plainQueue = 16
	t.Cleanup(func() { plainQueue = old })
	gs := newGatedStore()
	nodes := startNodes(t, 2, func(i int, b *broker.Broker) {
		if i == 1 {
			b.SetStore(gs)
		}
	})
	a, b := nodes[0], nodes[1]

	// A persistent subscriber on u2, offline: every message it gets is a
	// store write there.
	c, _, _ := connect(t, b.addr, "slow")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "d/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	c.Disconnect(&paho.Disconnect{})
	for deadline := time.Now().Add(10 * time.Second); !a.n.HasInterest("d/x"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("u1 never learned u2's interest")
		}
	}

	// u2's store stops committing: its delivery loop blocks, its queue fills.
	gs.hold()
	const n = 500
	for range n {
		if _, err := a.b.Publish("d/x", []byte("m"), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); b.n.Dropped() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no drop counted while u2 was blocked")
		}
	}
	gs.release()

	// Everything not dropped reaches the session.
	for deadline := time.Now().Add(10 * time.Second); pending(b.b)+int(b.n.Dropped()) != n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("u2: %d queued + %d dropped, want %d", pending(b.b), b.n.Dropped(), n)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(b.n)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64 = -1
	for _, mf := range mfs {
		if mf.GetName() == "mqtt_cluster_messages_dropped_total" {
			got = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got != float64(b.n.Dropped()) {
		t.Fatalf("mqtt_cluster_messages_dropped_total = %v, want %d", got, b.n.Dropped())
	}
	t.Logf("%d of %d dropped", b.n.Dropped(), n)
}

// A configured node this node has not seen since it started is named by
// its address; the node is ready with a majority (two of three) connected.
func TestHealthNamesNeverSeenNode(t *testing.T) {
	t.Parallel()
	var routes []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, ln.Addr().String())
		ln.Close()
	}
	name := fmt.Sprintf("health-%d", time.Now().UnixNano())
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	start := func(i int) (*broker.Broker, *Node) {
		b := broker.New(config.Default().Limits, nil)
		var peers []string
		for j, r := range routes {
			if j != i {
				peers = append(peers, r)
			}
		}
		lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		n, err := Start(Config{Name: name, Node: fmt.Sprintf("h%d", i+1), Listen: routes[i], Peers: peers, DataDir: dirs[i], Logger: lg}, b)
		if err != nil {
			t.Fatal(err)
		}
		return b, n
	}
	var bs []*broker.Broker
	var ns []*Node
	for i := range 3 {
		b, n := start(i)
		bs, ns = append(bs, b), append(ns, n)
	}
	t.Cleanup(func() { bs[1].Close(time.Second); ns[1].Close() })
	for _, n := range ns {
		select {
		case <-n.Ready():
		case <-time.After(60 * time.Second):
			t.Fatalf("%s not ready", n.Name())
		}
	}
	// h3 stops, and h1 restarts: h1 has never seen h3 since.
	for _, i := range []int{2, 0} {
		bs[i].Close(time.Second)
		ns[i].Close()
	}
	b1, n1 := start(0)
	t.Cleanup(func() { b1.Close(time.Second); n1.Close() })
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		h := n1.Health()
		if h.Ready && slices.Equal(h.Peers, []string{"h2"}) && slices.Equal(h.Down, []string{routes[2]}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %+v, want ready with peer h2 and %s down", h, routes[2])
		}
	}
	// h2 saw h3 before: by name.
	if h := ns[1].Health(); !slices.Equal(h.Down, []string{"h3"}) {
		t.Fatalf("h2's health %+v, want h3 down", h)
	}
}
