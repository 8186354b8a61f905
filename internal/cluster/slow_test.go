package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
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
	waitInterest(t, a, "d/x")

	// u2's store stops committing: its delivery loop blocks, its queue fills.
	gs.hold()
	const n = 500
	for i := range n {
		// A topic each: one NATS message each, not a few batches
		// (batch.go), so that the node's queue of 16 overflows and a
		// drop counts one message.
		if _, err := a.b.Publish(fmt.Sprintf("d/%d", i), []byte("m"), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a drop counted while u2 is blocked", func() bool { return b.n.Dropped() > 0 })
	gs.release()

	// Everything not dropped reaches the session.
	brokertest.WaitFor(t, func() error {
		if q, d := pending(b.b), int(b.n.Dropped()); q+d != n {
			return fmt.Errorf("u2: %d queued + %d dropped, want %d", q, d, n)
		}
		return nil
	})
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
	routes := freeport.Addrs(t, "127.0.0.1", 3)
	name := fmt.Sprintf("health-%d", time.Now().UnixNano())
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	log := testLogger()
	start := func(i int) *testNode {
		cfg := Config{Name: name, Node: fmt.Sprintf("h%d", i+1), Listen: routes[i], Peers: peersOf(routes, i), DataDir: dirs[i], Logger: log}
		return startMember(t, cfg, broker.New(config.Default().Limits, nil))
	}
	var tns []*testNode
	for i := range 3 {
		tns = append(tns, start(i))
	}
	for _, tn := range tns {
		waitReady(t, tn)
	}
	// h3 stops, and h1 restarts: h1 has never seen h3 since.
	for _, i := range []int{2, 0} {
		tns[i].stop()
	}
	h1 := start(0)
	brokertest.WaitFor(t, func() error {
		if h := h1.n.Health(); !h.Ready || !slices.Equal(h.Peers, []string{"h2"}) || !slices.Equal(h.Down, []string{routes[2]}) {
			return fmt.Errorf("health %+v, want ready with peer h2 and %s down", h, routes[2])
		}
		return nil
	})
	// h2 saw h3 before: by name (once its route to h3 is gone).
	brokertest.WaitFor(t, func() error {
		if h := tns[1].n.Health(); !slices.Equal(h.Down, []string{"h3"}) {
			return fmt.Errorf("h2's health %+v, want h3 down", h)
		}
		return nil
	})
}
