package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func leaseNode(name string, peers ...string) *Node {
	n := &Node{cfg: Config{Node: name, Peers: peers}}
	n.lease.init()
	return n
}

func beat(n *Node, from string, hears ...string) {
	data := from
	for _, h := range hears {
		data += "\n" + h
	}
	n.heardBeat(&nats.Msg{Data: []byte(data)})
}

// A node silent to this one but still heard by another live node (a
// partial partition) is not lost; silent to all, it is.
func TestSilentSparesNodeHeardElsewhere(t *testing.T) {
	t.Parallel()
	n := leaseNode("a", "addr-b", "addr-c")
	now := n.lease.mono()
	n.lease.heard["b"] = now - int64(deadAfter) - int64(time.Second)
	n.lease.heard["c"] = now
	n.lease.hears["c"] = map[string]bool{"b": true, "a": true}
	if got := n.silent(); len(got) != 0 {
		t.Fatalf("silent %v while c hears b", got)
	}
	n.lease.hears["c"] = map[string]bool{"a": true}
	if got := n.silent(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("silent %v, want [b]", got)
	}
}

// The lease: held while a majority hears the node; renewed only by
// heartbeats naming it; once lapsed, a renewal fences the node instead of
// letting it serve at once.
func TestLeaseNeedsMajorityAndFencesAfterLapse(t *testing.T) {
	t.Parallel()
	n := leaseNode("a", "addr-b", "addr-c")
	if n.leaseValid() {
		t.Fatal("lease held before any heartbeat")
	}
	beat(n, "b") // b does not hear a
	if n.leaseValid() {
		t.Fatal("lease held through a node that does not hear this one")
	}
	beat(n, "b", "a")
	n.lease.ready.Store(true) // as setup does, once the lease is held
	if !n.leaseValid() || n.fenceGate() != nil {
		t.Fatal("lease not held with b hearing a (2 of 3)")
	}
	// Lapsed, as after a freeze: the next renewal fences.
	n.lease.until.Store(n.lease.mono() - 1)
	if n.leaseValid() {
		t.Fatal("lapsed lease still valid")
	}
	beat(n, "b", "a")
	if n.leaseValid() || n.fenceGate() == nil || !n.lease.fenced.Load() {
		t.Fatal("a renewal after a lapse let the node serve without re-checking its sessions")
	}
	select {
	case <-n.lease.lapsed:
	default:
		t.Fatal("the fence loop was not woken")
	}
	// A cluster of one needs nobody.
	if solo := leaseNode("s"); !solo.leaseValid() {
		t.Fatal("a cluster of one has no lease")
	}
}
