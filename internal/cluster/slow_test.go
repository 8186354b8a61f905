package cluster

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// gatedStore holds every commit while closed: a broker that cannot keep up.
type gatedStore struct {
	store.Store
	mu   sync.Mutex
	open chan struct{}
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
	gs := &gatedStore{Store: memory.New(), open: make(chan struct{})}
	close(gs.open)
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
	gs.mu.Lock()
	gs.open = make(chan struct{})
	gs.mu.Unlock()
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
	gs.mu.Lock()
	close(gs.open)
	gs.mu.Unlock()

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
