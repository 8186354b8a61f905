package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// expectRefused checks that a CONNECT to addr is refused as server
// unavailable: 0x88 for MQTT 5, return code 3 for MQTT 3.1.1.
func expectRefused(t *testing.T, addr, what string) {
	t.Helper()
	c, ack, _ := connect(t, addr, "early-v5")
	if c != nil || ack == nil || ack.ReasonCode != byte(packet.ServerUnavailable) {
		t.Fatalf("%s: MQTT 5 CONNECT accepted or refused otherwise (client %v, CONNACK %+v); want 0x88", what, c != nil, ack)
	}
	r := dialRaw(t, addr)
	defer r.Close()
	if got := r.Connect("early-v3", false); got.ReasonCode != packet.V3ServerUnavailable {
		t.Fatalf("%s: MQTT 3.1.1 CONNACK return code %d, want 3 (server unavailable)", what, got.ReasonCode)
	}
}

// A node serves no client until it is ready (joined, replicated state set
// up) nor once it has lost the majority of its cluster: CONNECTs are
// refused as server unavailable, so that clients retry elsewhere.
func TestConnectRefusedUntilReady(t *testing.T) {
	defer connectHold.Store(connectHold.Load())
	connectHold.Store(int64(200 * time.Millisecond))
	routes := freeport.Addrs(t, "127.0.0.1", 3)
	log := testLogger()
	name := fmt.Sprintf("ready-%d", time.Now().UnixNano())
	lim := config.Default().Limits
	a := clusterMember(t, name, routes, 0, memory.New(), "", lim, log)
	expectRefused(t, a.addr, "alone, before the others start")
	if a.n.Health().Ready {
		t.Fatal("a node alone of three reports ready")
	}
	b := clusterMember(t, name, routes, 1, memory.New(), "", lim, log)
	c := clusterMember(t, name, routes, 2, memory.New(), "", lim, log)
	for _, tn := range []*testNode{a, b, c} {
		waitReady(t, tn)
	}
	// Ready now: served (a connect waits out a moment's doubt).
	connectHold.Store(int64(10 * time.Second))
	if cl, ack, _ := connect(t, a.addr, "served"); cl == nil {
		t.Fatalf("connect to a ready node refused: %+v", ack)
	}
	connectHold.Store(int64(200 * time.Millisecond))
	b.stop()
	c.stop()
	waitFor(t, "a node alone of three stops reporting ready", func() bool { return !a.n.Health().Ready })
	expectRefused(t, a.addr, "after losing the majority")
}
