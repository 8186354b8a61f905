package cluster

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// A message published on the node that takes a lost node's sessions over,
// after its compare-and-set made it a session's owner and before it
// installed the session, reaches the session. Without the stash
// (arrive.go) it reached nobody and its publisher was acknowledged: the
// node no longer forwarded it to the lost owner (the record names this
// node), and had no session to route it to yet. TestClusterNodeKilled
// lost one such message of 846, published on the taking node during the
// takeover.
//
// Not parallel, although its hooks would allow it: beside three other
// clusters, the last message published in the window ("during2") never
// reached the session in 2 runs of 5 at -count=5, while nodes reported
// being out of touch with the majority (starved heartbeats). Not yet
// explained; serial, it passes.
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
	unhook := onClientHook(t, &takenOverHook, "orphan", hook)
	// Lost, not stopped: no hand-over, the lowest-named live node (u1)
	// takes its sessions over.
	u3.n.Close()
	waitFor(t, "the session taken over by u1", func() bool { return u1.b.HasSession("orphan") })
	unhook()
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

// A node that comes back while another is still taking its sessions over
// keeps the sessions whose takeover had not written the record yet: the
// taker's compare-and-set, at the revision it read before the node came
// back, fails. It succeeded before (the node back only read the records),
// and the session ended up on both nodes: on the taker, with what it had
// read of the queue stream before, and on the node back, which confirmed
// what was published for the session meanwhile. The client's next claim
// found the taker's copy, without those messages. An operator saw losses
// in bursts "when B rejoins while its client's reconnects overlap".
func TestNodeBackDuringTakeoverKeepsItsSession(t *testing.T) {
	t.Parallel()
	routes := freeport.Addrs(t, "127.0.0.1", 3)
	log := testLogger()
	name := fmt.Sprintf("back-%d", time.Now().UnixNano())
	def := config.Default().Limits
	st, dir := memory.New(), t.TempDir()
	u1 := clusterMember(t, name, routes, 0, memory.New(), "", def, log)
	u2 := clusterMember(t, name, routes, 1, memory.New(), "", def, log)
	u3 := clusterMember(t, name, routes, 2, st, dir, def, log)
	for _, tn := range []*testNode{u1, u2, u3} {
		waitReady(t, tn)
	}
	parkSession(t, u3.addr, "back", "bk/#")
	waitIndexed(t, u1, "bk/x", "u3")
	waitIndexed(t, u2, "bk/x", "u3")
	pub, _, _ := connect(t, u2.addr, "pub")
	publishAll(t, pub, "bk/x", "before", 3)

	// u1 takes u3's sessions over once u3 is lost, and is held after
	// reading what u3 mirrored for the session, before writing its record.
	reached, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(id string) {
		if id != "back" {
			return
		}
		first := false
		once.Do(func() { first = true; close(reached) })
		if first {
			<-proceed
		}
	}
	unhook := onClientHook(t, &takeOverReadHook, "back", hook)
	u3.stop()
	select {
	case <-reached:
	case <-time.After(brokertest.Patience(t)):
		close(proceed)
		t.Fatal("u1 never took u3's session over")
	}
	// u3 comes back meanwhile, with its store, and serves the session:
	// what is published for it now is confirmed there.
	u3 = clusterMember(t, name, routes, 2, st, dir, def, log)
	waitReady(t, u3)
	waitFor(t, "u3 holding its session again", func() bool { return u3.b.HasSession("back") })
	publishAll(t, pub, "bk/x", "back", 3)
	// Then u1's takeover goes on to its compare-and-set.
	from := u1.n.watched.Load()
	close(proceed)
	waitFor(t, "u1 done with the takeover", func() bool { return u1.n.watched.Load() >= from+2 })
	unhook()
	if u1.b.HasSession("back") && u3.b.HasSession("back") {
		t.Errorf("the session is held on u1, which took it over, and on u3, which came back")
	}

	recv := reconnectUntil(t, u2.addr, "back")
	want := append(payloads("before", 3), payloads("back", 3)...)
	got := map[string]bool{}
	missing := func() (out []string) {
		for _, w := range want {
			if !got[w] {
				out = append(out, w)
			}
		}
		return out
	}
	deadline := time.After(brokertest.Patience(t))
	for len(missing()) > 0 {
		select {
		case m := <-recv:
			got[string(m.Payload)] = true
		case <-deadline:
			t.Fatalf("acknowledged messages never delivered to the session: %v (got %v)", missing(), slices.Sorted(maps.Keys(got)))
		}
	}
}

// A client claiming its session on the node that is taking it over from
// the lost node, between that node's compare-and-set and its install,
// gets the session with what the lost node had queued for it. The claim
// found the record naming its own node and no session held, took that for
// a store lost in a restart, and recovered the session from this node's
// (empty) part of the queue stream; the takeover then found the session
// installed and its queued messages were dropped.
func TestClaimDuringTakeoverGetsQueuedMessages(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]
	parkSession(t, u3.addr, "tc", "tc/#")
	waitIndexed(t, u1, "tc/x", "u3")
	pub, _, _ := connect(t, u1.addr, "pub")
	publishAll(t, pub, "tc/x", "queued", 3) // confirmed by u3, and in the queue stream

	type dialed struct {
		recv    chan *paho.Publish
		present bool
		err     error
	}
	dial := make(chan dialed, 1)
	waiting := make(chan struct{})
	var waitOnce sync.Once
	wait := func(id string) {
		if id == "tc" {
			waitOnce.Do(func() { close(waiting) })
		}
	}
	onClientHook(t, &takeOverWaitHook, "tc", wait)
	var ran atomic.Int32
	hook := func(id string) {
		if id != "tc" || ran.Add(1) != 1 {
			return
		}
		// The client reconnects to u1 now; the takeover goes on once
		// its claim waits for it, or has installed the session itself.
		go func() {
			c, ack, recv := connect(t, u1.addr, "tc")
			d := dialed{recv: recv}
			if c == nil {
				d.err = fmt.Errorf("tc refused on u1: %+v", ack)
			} else {
				d.present = ack.SessionPresent
			}
			dial <- d
		}()
		brokertest.WaitFor(t, func() error {
			select {
			case <-waiting:
				return nil
			default:
			}
			if u1.b.HasSession("tc") {
				return nil // the claim went ahead without the takeover
			}
			return fmt.Errorf("tc's claim on u1 neither waits for the takeover nor installed the session")
		})
	}
	unhook := onClientHook(t, &takenOverHook, "tc", hook)
	u3.n.Close()
	var d dialed
	select {
	case d = <-dial:
	case <-time.After(brokertest.Patience(t)):
		t.Fatal("tc's connect to u1 never finished")
	}
	unhook()
	if d.err != nil {
		t.Fatal(d.err)
	}
	if !d.present {
		t.Fatal("tc on u1: session present = false")
	}
	want := payloads("queued", 3)
	got := map[string]bool{}
	deadline := time.After(brokertest.Patience(t))
	for len(got) < len(want) {
		select {
		case m := <-d.recv:
			got[string(m.Payload)] = true
		case <-deadline:
			t.Fatalf("messages queued on the lost node never delivered: got %v of %v", slices.Sorted(maps.Keys(got)), want)
		}
	}
	select {
	case <-waiting:
	default:
		t.Error("the claim did not wait for the takeover: the test no longer covers the window")
	}
}
