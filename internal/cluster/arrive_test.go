package cluster

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// A message published on the node a persistent session is moving to, after
// that node's claim made it the owner and before it installed the session,
// reaches the session. Neither path covered it before: the session was not
// held here yet, and nothing was forwarded to the old owner, which had let
// the session go. The fault suite lost such messages in rolling restarts,
// where a stopping node's publishers and moving subscribers reconnect to
// the same node at once.
func TestPublishedWhileSessionArrivesReachesIt(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "arriver", "ar/#")
	waitRecorded(t, a, "arriver")
	waitRecorded(t, b, "arriver")
	const during = 3
	hook := func(id string) {
		if id != "arriver" {
			return
		}
		if b.b.HasSession("arriver") {
			t.Errorf("the session is installed before the hook: the test no longer covers the window")
		}
		for i := range during {
			// Returns once routed and committed on b.
			if _, err := b.b.Publish("ar/x", fmt.Appendf(nil, "during%d", i), 1, false); err != nil {
				t.Errorf("publish on the new node: %v", err)
			}
		}
	}
	unhook := onClientHook(t, &claimedHook, "arriver", hook)
	cl, ack, recv := connect(t, b.addr, "arriver")
	unhook()
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("move: CONNACK %+v, want session present", ack)
	}
	// Published once the session is installed: it arrives after those
	// published during the move, if they arrive at all.
	if _, err := b.b.Publish("ar/x", []byte("after"), 1, false); err != nil {
		t.Fatal(err)
	}
	var got []string
	timeout := time.After(brokertest.Patience(t))
	for len(got) == 0 || got[len(got)-1] != "after" {
		select {
		case m := <-recv:
			got = append(got, string(m.Payload))
		case <-timeout:
			t.Fatalf("the moved session received %q and then nothing", got)
		}
	}
	want := append(payloads("during", during), "after")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the moved session received %q, want %q", got, want)
	}
}

// A clean start on another node than the session's ends the session there
// and moves nothing: the claim has no state to install.
func TestCleanStartElsewhereConnects(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "cleaner", "cl/#")
	waitRecorded(t, b, "cleaner")
	// A node whose heartbeats starved on a loaded machine refuses
	// connects (0x88, "not ready; retry") until it hears a majority
	// again: such a refusal is retried, as a client would.
	var c *paho.Client
	var ack *paho.Connack
	retry(t, func() error {
		nc, err := net.DialTimeout("tcp", b.addr, brokertest.Patience(t))
		if err != nil {
			t.Fatal(err)
		}
		c = paho.NewClient(paho.ClientConfig{ClientID: "cleaner", Conn: nc})
		ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
		defer cancel()
		ack, err = c.Connect(ctx, &paho.Connect{ClientID: "cleaner", CleanStart: true})
		if err != nil {
			nc.Close()
			if ack != nil && ack.ReasonCode == 0x88 {
				return fmt.Errorf("clean start on the other node refused: %v", err)
			}
			t.Fatalf("clean start on the other node: %v (CONNACK %+v)", err, ack)
		}
		return nil
	})
	if ack.SessionPresent {
		t.Fatal("clean start: session present")
	}
	c.Disconnect(&paho.Disconnect{})
	waitFor(t, "the old node to let the session go", func() bool { return !a.b.HasSession("cleaner") })
}

// The old owner's answer to a commit carries what it queued for the
// session during the move. If that answer is lost (a stopping owner's
// connection closing under it), the new node's retry gets the same
// answer, not "no such transfer" and the loss of those messages.
// Run by TestHandOverFaults.
func retriedCommitGetsTheTail(t *testing.T, a, b *testNode) {
	parkSession(t, a.addr, "tailed", "tl/#")
	waitRecorded(t, b, "tailed")
	const late = 3
	// After the state was fetched and the record names u2, before the
	// commit: published on u1, these join the prepared session's tail.
	publish := func() error {
		for i := range late {
			if _, err := a.b.Publish("tl/x", fmt.Appendf(nil, "tail%d", i), 1, false); err != nil {
				return err
			}
		}
		return nil
	}
	claimWriteFault.Store(&publish)
	defer claimWriteFault.Store(nil)
	var dropped sync.Once
	lose := func(string) bool {
		lost := false
		dropped.Do(func() { lost = true })
		return lost
	}
	commitReplyFault.Store(&lose)
	defer commitReplyFault.Store(nil)
	cl, ack, recv := connect(t, b.addr, "tailed")
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("move: CONNACK %+v, want session present", ack)
	}
	expectAll(t, recv, payloads("tail", late))
}
