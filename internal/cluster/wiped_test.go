package cluster

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// A node that lost its store (restarted with its data folder wiped)
// while its session's record still named the node the session came from
// (the new owner's rewrite of the record had not landed: the bucket
// without a quorum, in the fault suite's wipe-node runs) recovers the
// session from the record and its own part of the queue stream when the
// client comes back. It claimed it "again" from the node it came from,
// which had let it go, and started it empty: no subscriptions, and the
// messages queued for it (acknowledged to their publisher) delivered to
// no one.
func TestWipedNodeClaimingAgainRecoversSession(t *testing.T) {
	t.Parallel()
	routes := freeport.Addrs(t, "127.0.0.1", 3)
	log := testLogger()
	name := fmt.Sprintf("wiped-%d", time.Now().UnixNano())
	def := config.Default().Limits
	dir := t.TempDir()
	a := clusterMember(t, name, routes, 0, memory.New(), "", def, log)
	b := clusterMember(t, name, routes, 1, memory.New(), "", def, log)
	c := clusterMember(t, name, routes, 2, memory.New(), dir, def, log)
	for _, tn := range []*testNode{a, b, c} {
		waitReady(t, tn)
	}
	parkSession(t, c.addr, "wc", "wc/#")
	waitIndexed(t, a, "wc/x", "u3")
	pub, _, _ := connect(t, a.addr, "wc-pub")
	if pub == nil {
		t.Fatal("publisher refused")
	}
	publishAll(t, pub, "wc/x", "queued", 3) // confirmed by u3: stored and in the queue stream

	c.stop()
	c = clusterMember(t, name, routes, 2, memory.New(), dir, def, log) // its store wiped
	waitReady(t, c)
	// The record as a claim from u2 left it, before u3 recorded the
	// session itself: it names u3 and the node it came from.
	k := key("wc")
	brokertest.WaitFor(t, func() error {
		ctx, cancel := c.n.claimContext()
		defer cancel()
		e, err := c.n.sessions.Get(ctx, k)
		if err != nil {
			return err
		}
		var r record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return err
		}
		if r.Node != "u3" || r.Session == nil {
			return fmt.Errorf("record of wc: %+v", r)
		}
		r.From = "u2"
		_, err = c.n.sessions.Update(ctx, k, mustJSON(r), e.Revision())
		return err
	})

	cl, ack, recv := connect(t, c.addr, "wc")
	if cl == nil {
		t.Fatalf("wc refused on the wiped node: %+v", ack)
	}
	if !ack.SessionPresent {
		t.Error("wc on the wiped node: session present = false")
	}
	expectAll(t, recv, payloads("queued", 3))
	publishAll(t, pub, "wc/x", "after", 1) // its subscription came back with it
	expectAll(t, recv, payloads("after", 1))
}
