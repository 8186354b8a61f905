package broker

import (
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// InjectTo delivers to the named sessions this node holds and names those
// it does not, so that a relayed message for a session still on its way
// here is kept for later rather than dropped.
func TestInjectToNamesSessionsNotHeld(t *testing.T) {
	b := New(config.Default().Limits, nil)
	b.SetStore(memory.New())
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(time.Second) })
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "here", Version: 5, ExpiryInterval: 60},
		Subs: []store.Subscription{{Filter: "r/#", Options: packet.Subscription{Filter: "r/#", QoS: 1}}}})
	m := &session.Message{Topic: "r/1", Payload: []byte("x"), QoS: 1}
	safe, missing := b.InjectTo(m, []string{"here", "coming"})
	if !safe {
		t.Fatal("InjectTo not safe on a memory store")
	}
	if len(missing) != 1 || missing[0] != "coming" {
		t.Fatalf("missing = %v, want [coming]", missing)
	}
	if _, queued := b.QueueTotals(); queued != 1 {
		t.Fatalf("%d messages queued, want 1 (for the session held)", queued)
	}
}
