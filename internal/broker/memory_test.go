package broker

import (
	"slices"
	"testing"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// The memory a cluster node writes to the queue stream before it purges
// a session's entries leaves out the deliveries the session still holds:
// a replay learns those from their own entries, and named in the memory
// while their entry had not reached the stream, a relayed copy would be
// skipped and the message lost.
func TestSessionMemoryLeavesOutHeldDeliveries(t *testing.T) {
	b := New(config.Default().Limits, nil)
	b.SetStore(memory.New())
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	acked, held := session.Origin{Instance: 4, Seq: 1}, session.Origin{Instance: 4, Seq: 2}
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "s", Version: 5, ExpiryInterval: 60},
		Taken: []session.Origin{acked, held},
		Out:   []SnapshotDelivery{{Msg: store.Message{Topic: "m/x", Payload: []byte("x"), QoS: 1, Origin: store.Origin(held)}, QoS: 1}}})
	got, ok := b.SessionMemory("s")
	if !ok || !slices.Equal(got, []session.Origin{acked}) {
		t.Fatalf("SessionMemory = %v, %v; want [%v], true", got, ok, acked)
	}
	if _, ok := b.SessionMemory("nobody"); ok {
		t.Fatal("SessionMemory of a session not held: ok")
	}
}
