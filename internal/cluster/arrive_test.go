package cluster

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
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

// A clean start on another node than the session's ends the session there
// and moves nothing: the claim has no state to install.
func TestCleanStartElsewhereConnects(t *testing.T) {
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "cleaner", "cl/#")
	waitRecorded(t, b, "cleaner")
	nc, err := net.DialTimeout("tcp", b.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := paho.NewClient(paho.ClientConfig{ClientID: "cleaner", Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: "cleaner", CleanStart: true})
	if err != nil {
		t.Fatalf("clean start on the other node: %v (CONNACK %+v)", err, ack)
	}
	if ack.SessionPresent {
		t.Fatal("clean start: session present")
	}
	c.Disconnect(&paho.Disconnect{})
	waitFor(t, "the old node to let the session go", func() bool { return !a.b.HasSession("cleaner") })
}
