package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/packet"
)

// A node that stops answering while its routes stay up (frozen, as under
// SIGSTOP: here it neither sends nor hears heartbeats) is declared lost
// and its sessions taken over. It fences itself first: a QoS 1 publish it
// takes meanwhile is never acknowledged. When it wakes, it finds its
// sessions moved, evicts them (closing their connections) and serves
// again; the persistent session it held comes back with what was
// published for it while it was away.
func TestFrozenNodeFencedAndTakenOver(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]
	parkSession(t, u3.addr, "held", "h/#")
	waitIndexed(t, u1, "h/x", "u3")
	pub, _, _ := connect(t, u3.addr, "pub")
	if pub == nil {
		t.Fatal("publisher refused")
	}
	waitRecorded(t, u3, "pub")

	frozen := time.Now()
	u3.n.muted.Store(true)
	waitFor(t, "u3 fenced", func() bool { return !u3.n.Health().Ready })
	// Taken on the way to the client, not before: the fence holds it.
	acked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := pub.Publish(ctx, &paho.Publish{Topic: "h/while-fenced", QoS: 1, Payload: []byte("f")})
		acked <- err
	}()
	waitFor(t, "u1 takes over u3's sessions", func() bool { return u1.b.HasSession("held") && u1.b.HasSession("pub") })
	t.Logf("u3 frozen; its sessions taken over %v later (declared lost after %v of silence)", time.Since(frozen).Round(10*time.Millisecond), deadAfter)
	select {
	case err := <-acked:
		t.Fatalf("a fenced node answered a QoS 1 publish (err %v)", err)
	default:
	}
	if u1.n.Health().Ready != true {
		t.Fatal("u1 not ready with u2 reachable")
	}
	// Published for the session while its node is away: kept by u1.
	if _, err := u1.b.Publish("h/after", []byte("a"), 1, false); err != nil {
		t.Fatal(err)
	}

	u3.n.muted.Store(false)
	waitFor(t, "u3 serving again", func() bool { return u3.n.Health().Ready })
	if u3.b.HasSession("held") || u3.b.HasSession("pub") {
		t.Fatal("u3 serves again still holding sessions taken over while it was away")
	}
	select {
	case err := <-acked:
		if err == nil {
			t.Fatal("the publish taken while fenced was acknowledged by the node that lost its session")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the publisher whose session moved is still connected to the fenced node")
	}
	recv := reconnectUntil(t, u3.addr, "held")
	expectAll(t, recv, []string{"a"})
}

// A node cut off from the others (the same, seen from the others) stops
// acknowledging at once, even before any session moves, and takes nobody
// over: the majority side decides.
func TestCutOffNodeTakesNobodyOver(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]
	parkSession(t, u1.addr, "kept", "k/#")
	waitRecorded(t, u1, "kept")
	u3.n.muted.Store(true)
	waitFor(t, "u3 fenced", func() bool { return !u3.n.Health().Ready })
	waitFor(t, "u1 declares u3 lost", func() bool {
		for _, p := range u1.n.silent() {
			if p == "u3" {
				return true
			}
		}
		return false
	})
	// u3 sees u1 and u2 as silent, but holds no lease: it must take
	// nothing over, however long it watches.
	if u3.n.fenceGate() == nil {
		t.Fatal("u3 not fenced while cut off")
	}
	waitFor(t, "u3 finds u1 silent", func() bool {
		for _, p := range u3.n.silent() {
			if p == "u1" {
				return true
			}
		}
		return false
	})
	from := u3.n.watched.Load()
	waitFor(t, "u3 watches its peers a while longer", func() bool { return u3.n.watched.Load() >= from+8 })
	if owner, err := u1.n.readOwner("kept"); err != nil || owner != "u1" {
		t.Fatalf("session of a live node: owner %q (%v), want u1", owner, err)
	}
	if u3.b.HasSession("kept") {
		t.Fatal("a cut-off node took a live node's session")
	}
}

// A node fenced for good (frozen, the queue-stream write of a publish it
// took never confirmed) still shuts down: once the broker's Close has cut
// its clients off, the handler held behind the fence gives up, where it
// used to hold Close, and so the node's shutdown, forever.
func TestFencedNodeStillCloses(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u3 := nodes[2]
	parkSession(t, u3.addr, "held", "h/#")
	pub, _ := reconnectRaw(t, u3.addr, "pub")
	waitRecorded(t, u3, "pub")

	// The write for the publish is held as in a partition; then the node
	// freezes and stays so.
	u3.n.holdMir.Store(true)
	pub.Send(&packet.Publish{Topic: "h/x", QoS: 1, PacketID: 1, Payload: []byte("x")})
	waitPending(t, u3, 1)
	u3.n.muted.Store(true)
	waitFor(t, "u3 fenced", func() bool { return !u3.n.Health().Ready })

	closed := make(chan struct{})
	go func() { u3.stop(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(brokertest.Patience(t)):
		// Woken, so that the cleanup's stop can end.
		u3.n.holdMir.Store(false)
		u3.n.muted.Store(false)
		t.Fatal("a fenced node's shutdown waits forever for a handler held behind the fence")
	}
}
