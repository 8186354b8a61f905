package cluster

import (
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// A message published on the node that takes a lost node's sessions over,
// after its compare-and-set made it a session's owner and before it
// installed the session, reaches the session. Without the stash
// (arrive.go) it reached nobody and its publisher was acknowledged: the
// node no longer forwarded it to the lost owner (the record names this
// node), and had no session to route it to yet. TestClusterNodeKilled
// lost one such message of 846, published on the taking node during the
// takeover.
func TestPublishedWhileTakingOverReachesSession(t *testing.T) {
	nodes := startNodes(t, 3)
	u1, u2, u3 := nodes[0], nodes[1], nodes[2]
	parkSession(t, u3.addr, "orphan", "to/#")
	waitIndexed(t, u1, "to/x", "u3")
	waitIndexed(t, u2, "to/x", "u3")
	pub, _, _ := connect(t, u1.addr, "pub")
	publishAll(t, pub, "to/x", "before", 3) // confirmed by u3, and in the queue stream

	const during = 3
	var ran atomic.Int32
	hook := func(id string) {
		if id != "orphan" || ran.Add(1) != 1 {
			return
		}
		if u1.b.HasSession("orphan") {
			t.Errorf("the session is installed before the hook: the test no longer covers the window")
		}
		for i := range during {
			// Returns once routed and committed on u1 (not waiting for
			// the acknowledgement's other conditions).
			if _, err := u1.b.Publish("to/x", fmt.Appendf(nil, "during%d", i), 1, false); err != nil {
				t.Errorf("publish on the taking node: %v", err)
			}
		}
	}
	takenOverHook.Store(&hook)
	defer takenOverHook.Store(nil)
	// Lost, not stopped: no hand-over, the lowest-named live node (u1)
	// takes its sessions over.
	u3.n.Close()
	waitFor(t, "the session taken over by u1", func() bool { return u1.b.HasSession("orphan") })
	takenOverHook.Store(nil)
	if ran.Load() == 0 {
		t.Fatal("the takeover never ran the hook")
	}

	// The session is held before what was kept for it is delivered to
	// it: "after" is published once that is done, to come out last.
	waitFor(t, "the takeover's arrival ended", func() bool { return u1.n.arr.count.Load() == 0 })
	recv := reconnectUntil(t, u1.addr, "orphan")
	if _, err := u1.b.Publish("to/x", []byte("after"), 1, false); err != nil {
		t.Fatal(err)
	}
	want := append(append(payloads("before", 3), payloads("during", during)...), "after")
	got := map[string]bool{}
	deadline := time.After(brokertest.Patience(t))
	for !got["after"] {
		select {
		case m := <-recv:
			got[string(m.Payload)] = true
		case <-deadline:
			t.Fatalf("the session got %v and never %q", slices.Sorted(maps.Keys(got)), "after")
		}
	}
	// "after" was routed once the session was installed: whatever was
	// stored for it before came out of its queue first.
	var missing []string
	for _, w := range want {
		if !got[w] {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("acknowledged messages never delivered to the session taken over: %v (got %v)", missing, slices.Sorted(maps.Keys(got)))
	}
}
