package cluster

import (
	"fmt"
	"testing"
	"time"
)

// A message published on the node a persistent session is moving to, after
// that node's claim made it the owner and before it installed the session,
// reaches the session. Neither path covered it before: the session was not
// held here yet, and nothing was forwarded to the old owner, which had let
// the session go. The fault suite lost such messages in rolling restarts,
// where a stopping node's publishers and moving subscribers reconnect to
// the same node at once.
func TestPublishedWhileSessionArrivesReachesIt(t *testing.T) {
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
	claimedHook.Store(&hook)
	defer claimedHook.Store(nil)
	cl, ack, recv := connect(t, b.addr, "arriver")
	claimedHook.Store(nil)
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("move: CONNACK %+v, want session present", ack)
	}
	// Published once the session is installed: it arrives after those
	// published during the move, if they arrive at all.
	if _, err := b.b.Publish("ar/x", []byte("after"), 1, false); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) == 0 || got[len(got)-1] != "after" {
		select {
		case m := <-recv:
			got = append(got, string(m.Payload))
		case <-time.After(20 * time.Second):
			t.Fatalf("the moved session received %q and then nothing for 20 s", got)
		}
	}
	want := append(payloads("during", during), "after")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the moved session received %q, want %q", got, want)
	}
}
