package cluster

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

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
