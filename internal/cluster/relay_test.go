package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
)

// Messages published on a live node while the node owning a persistent
// session is lost, before anyone took the session over, are acknowledged
// and kept: they go to the relay stream, and the session gets them from
// the node its client reconnects to.
func TestPublishedDuringNodeLossKept(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u2, u3 := nodes[0], nodes[1], nodes[2]

	parkSession(t, u3.addr, "lossq", "loss/#")
	waitIndexed(t, u1, "loss/a", "u3")
	pub, _, _ := connect(t, u1.addr, "pub")

	// The takeover waits until the publishes are done: on a loaded
	// machine u3's Close alone can outlast the 3 s after which it is
	// declared lost, and a session already taken over needs no relay.
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	onClientHook(t, &takeOverReadHook, "lossq", func(string) { <-release })

	// u3 leaves: nobody subscribes for the session until it is taken
	// over; every acknowledged message must wait.
	u3.n.Close()
	start := time.Now()
	publishAll(t, pub, "loss/a", "gone", 30)
	t.Logf("30 publishes acknowledged in %s after the node's loss", time.Since(start).Round(time.Millisecond))
	free()
	// And after the takeover, on the node that took the session over.
	waitFor(t, "lossq taken over", func() bool { return u1.b.HasSession("lossq") || u2.b.HasSession("lossq") })
	publishAll(t, pub, "loss/a", "after", 10)

	recv := reconnectUntil(t, u2.addr, "lossq")
	expectAll(t, recv, append(payloads("gone", 30), payloads("after", 10)...))
	if c := u1.n.rel.relayed.Load(); c == 0 {
		t.Error("u1 relayed nothing: the messages did not go through the relay stream")
	}
}

// A message on its way to a node that cannot store it (its store blocks)
// when that node is lost is not lost with it: the node never confirmed
// it, so the publisher's node relays it, and the session's new node
// delivers it.
func TestUnconfirmedMessageRelayedWhenNodeLost(t *testing.T) {
	t.Parallel()
	gs := newGatedStore()
	nodes := startNodes(t, 3, func(i int, b *broker.Broker) {
		if i == 2 {
			b.SetStore(gs)
		}
	})
	u1, u3 := nodes[0], nodes[2]

	parkSession(t, u3.addr, "q", "stuck/#")
	waitIndexed(t, u1, "stuck/x", "u3")
	waitInterest(t, u1, "stuck/x")
	pub, _, _ := connect(t, u1.addr, "pub")
	publishAll(t, pub, "stuck/x", "ok", 5) // confirmed by u3, not relayed
	if c := u1.n.rel.relayed.Load(); c != 0 {
		t.Fatalf("u1 relayed %d messages while u3 confirmed them", c)
	}

	// u3's store stops: what reaches it now is never stored there.
	gs.hold()
	acked := make(chan error, 1)
	go func() {
		for i := range 10 {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			_, err := pub.Publish(ctx, &paho.Publish{Topic: "stuck/x", QoS: 1, Payload: fmt.Appendf(nil, "stuck%d", i)})
			cancel()
			if err != nil {
				acked <- err
				return
			}
		}
		acked <- nil
	}()
	time.Sleep(500 * time.Millisecond)
	// u3 leaves with the messages it never confirmed. Its delivery loop
	// is stuck in the store, so Close (which waits for it) finishes once
	// the store lets go, by which time its connections are closed and
	// it cannot confirm anything.
	go u3.n.Close()
	time.Sleep(500 * time.Millisecond)
	gs.release()
	if err := <-acked; err != nil {
		t.Fatal(err)
	}

	recv := reconnectUntil(t, u1.addr, "q")
	expectAll(t, recv, append(payloads("ok", 5), payloads("stuck", 10)...))
}
