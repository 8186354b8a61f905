package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// TestHandOverFaults moves sessions from u1 to u2 of one cluster under
// faults injected through package-level hooks that name no client
// (fetchFault, claimWriteFault, commitReplyFault). Such tests run one at
// a time anyway (see TestMain); each subtest moves a session of its own,
// on topics of its own, and clears its hook before the next starts, so
// they share the cluster and its start instead of paying it each.
func TestHandOverFaults(t *testing.T) {
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	// First: it counts everything queued on u1, which holds no other
	// session yet.
	t.Run("FailureKeepsSession", func(t *testing.T) { handOverFailureKeepsSession(t, a, b) })
	t.Run("KeepsMessagesQueuedDuringTransfer", func(t *testing.T) { handOverKeepsMessagesQueuedDuringTransfer(t, a, b) })
	t.Run("RetriedCommitGetsTheTail", func(t *testing.T) { retriedCommitGetsTheTail(t, a, b) })
	t.Run("ClaimRetriedAfterLostAnswer", func(t *testing.T) { claimRetriedAfterLostAnswer(t, a, b) })
}

// A hand-over whose transfer fails leaves the session, with every queued
// message, on its node; the connect is refused (0x88) so that the client
// retries, and the retry moves it intact.
func handOverFailureKeepsSession(t *testing.T, a, b *testNode) {
	parkSession(t, a.addr, "keep", "k/#")
	const n, size = 100, 20 << 10 // several chunks
	body := func(i int) []byte { return append([]byte(fmt.Sprintf("%06d", i)), bytes.Repeat([]byte("x"), size)...) }
	for i := range n {
		if _, err := a.b.Publish("k/m", body(i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.WaitFor(t, func() error {
		if q := pending(a.b); q != n {
			return fmt.Errorf("queued on u1: %d, want %d", q, n)
		}
		return nil
	})

	fault := func(chunk int) error {
		if chunk == 2 {
			return errors.New("injected fault")
		}
		return nil
	}
	fetchFault.Store(&fault)
	defer fetchFault.Store(nil)
	if cl, ack, _ := connect(t, b.addr, "keep"); cl != nil || ack == nil || ack.ReasonCode != 0x88 {
		t.Fatalf("connect during a failed transfer: client %v, CONNACK %+v; want refused with 0x88", cl != nil, ack)
	}
	if !a.b.HasSession("keep") || b.b.HasSession("keep") {
		t.Fatalf("after a failed transfer: on u1 %v, on u2 %v; want only on u1", a.b.HasSession("keep"), b.b.HasSession("keep"))
	}
	if q := pending(a.b); q != n {
		t.Fatalf("after a failed transfer u1 has %d queued, want %d", q, n)
	}

	fetchFault.Store(nil)
	cl, ack, recv := connect(t, b.addr, "keep")
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("retry: CONNACK %+v, want session present", ack)
	}
	for i := range n {
		select {
		case m := <-recv:
			if !bytes.Equal(m.Payload, body(i)) {
				t.Fatalf("message %d: got %.6q", i, m.Payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d of %d did not arrive", i, n)
		}
	}
	waitFor(t, "u1 lets go of the session after a committed transfer", func() bool { return !a.b.HasSession("keep") })
}

// An owner that hears neither commit nor abort settles the transfer by the
// sessions bucket: the session stays if the other node never took it.
func TestHandOverUnconfirmedStays(t *testing.T) {
	old := xferIdle
	xferIdle = 500 * time.Millisecond
	t.Cleanup(func() { xferIdle = old }) // after the nodes' own cleanups
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "idle", "i/#")
	if _, err := a.b.Publish("i/m", []byte("kept"), 1, false); err != nil {
		t.Fatal(err)
	}
	// u2 fetches the state and then goes quiet.
	in, err := b.n.askHandOver("u1", "idle", false)
	if err != nil || in.snap == nil || len(in.snap.Out) != 1 {
		t.Fatalf("hand-over: %v, %+v", err, in)
	}
	// Within 5 s, ten times xferIdle but half its default: the
	// shortened idle time is what closed it.
	brokertest.WaitWithin(t, 5*time.Second, func() error {
		a.n.xfersMu.Lock()
		open := len(a.n.xfers)
		a.n.xfersMu.Unlock()
		if open != 0 {
			return fmt.Errorf("transfer still open on u1 after %v idle", xferIdle)
		}
		return nil
	})
	if q := pending(a.b); !a.b.HasSession("idle") || q != 1 {
		t.Fatalf("unconfirmed transfer: session on u1 %v with %d queued, want kept with 1", a.b.HasSession("idle"), q)
	}
}

// A node that restarts and still owns its sessions (nobody took them over)
// publishes the wills it restored, once it knows that.
func TestRestartedNodePublishesOwnWills(t *testing.T) {
	t.Parallel()
	st := memory.New()
	dir := t.TempDir()
	route := freeport.Addr(t) // the same on restart
	log := testLogger()
	start := func() *testNode {
		b := broker.New(config.Default().Limits, log)
		b.SetStore(st)
		tn := startMember(t, Config{Name: "restart", Node: "r1", Listen: route, DataDir: dir, Logger: log}, b)
		waitReady(t, tn)
		return tn
	}
	first := start()
	e := uint32(300)
	brokertest.DialPaho(t, first.addr, "w", &paho.Connect{Properties: &paho.ConnectProperties{SessionExpiryInterval: &e},
		WillMessage: &paho.WillMessage{Topic: "will/w", QoS: 1, Retain: true, Payload: []byte("gone")}})
	// The node stops with the client connected: the will stays pending
	// in the store, as after a crash.
	first.stop()

	second := start()
	brokertest.WaitFor(t, func() error {
		if ms, _ := second.b.RetainedMatching("will/w", 1); len(ms) != 1 {
			return errors.New("the restarted node did not publish the will of its own session")
		}
		return nil
	})
}

// Messages queued for a session on its old node while its state is on the
// way to the new node go with it too.
func handOverKeepsMessagesQueuedDuringTransfer(t *testing.T, a, b *testNode) {
	parkSession(t, a.addr, "late", "l/#")
	const n, late, size = 60, 5, 20 << 10 // several chunks
	body := func(i int) []byte { return append([]byte(fmt.Sprintf("%06d", i)), bytes.Repeat([]byte("x"), size)...) }
	for i := range n {
		if _, err := a.b.Publish("l/m", body(i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	// While u2 fetches the state, more is published for the session on u1.
	fault := func(chunk int) error {
		if chunk == 1 {
			for i := n; i < n+late; i++ {
				if _, err := a.b.Publish("l/m", body(i), 1, false); err != nil {
					return err
				}
			}
		}
		return nil
	}
	fetchFault.Store(&fault)
	defer fetchFault.Store(nil)
	cl, ack, recv := connect(t, b.addr, "late")
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("move: CONNACK %+v, want session present", ack)
	}
	for i := range n + late {
		select {
		case m := <-recv:
			if !bytes.Equal(m.Payload, body(i)) {
				t.Fatalf("message %d: got %.6q", i, m.Payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d of %d did not arrive", i, n+late)
		}
	}
}

// A message published on the old node just after a session has left it,
// before the new node has installed the session or the old node has
// read the new owner from the sessions bucket, follows the session.
func TestPublishedAsSessionLeavesFollowsIt(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "mover", "mv/#")
	waitRecorded(t, a, "mover")
	const late = 3
	hook := func(id string) {
		if id != "mover" {
			return
		}
		for i := range late {
			if _, err := a.b.Publish("mv/x", fmt.Appendf(nil, "late%d", i), 1, false); err != nil {
				t.Errorf("publish on the old node: %v", err)
			}
		}
	}
	onClientHook(t, &committedHook, "mover", hook)
	cl, ack, recv := connect(t, b.addr, "mover")
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("move: CONNACK %+v, want session present", ack)
	}
	expectAll(t, recv, payloads("late", late))
}

// A claim whose write landed but whose answer was lost is refused, and the
// client's retry finds the session, with its queued messages, although
// the record already names the new node.
func claimRetriedAfterLostAnswer(t *testing.T, a, b *testNode) {
	parkSession(t, a.addr, "unsure", "un/#")
	waitRecorded(t, a, "unsure")
	const queued = 5
	for i := range queued {
		if _, err := a.b.Publish("un/x", fmt.Appendf(nil, "q%d", i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	fault := func() error { return errors.New("no response from stream (test)") }
	claimWriteFault.Store(&fault)
	cl, ack, _ := connect(t, b.addr, "unsure")
	claimWriteFault.Store(nil)
	if cl != nil {
		t.Fatalf("connect went ahead after its claim seemed to fail: CONNACK %+v", ack)
	}
	if owner, err := b.n.readOwner("unsure"); err != nil || owner != "u2" {
		t.Fatalf("record names %q (%v), want u2: the fault should follow a landed write", owner, err)
	}
	recv := reconnectUntil(t, b.addr, "unsure")
	expectAll(t, recv, payloads("q", queued))
	if a.b.HasSession("unsure") {
		t.Fatal("the old node still holds the session after it moved")
	}
}
