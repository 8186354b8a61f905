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

// A session that moves between nodes while offline keeps its expiry
// countdown: it expires when it would have on its old node, not a full
// interval after the move.
func TestAdoptKeepsExpiryCountdown(t *testing.T) {
	b := New(config.Default().Limits, nil)
	b.SetStore(memory.New())
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(time.Second) })
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "moved", Version: 5, ExpiryInterval: 3,
		DisconnectedAt: time.Now().Add(-2500 * time.Millisecond)}})
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "fresh", Version: 5, ExpiryInterval: 3}})
	if !b.HasSession("moved") || !b.HasSession("fresh") {
		t.Fatal("sessions not adopted")
	}
	// 0.5 s were left of "moved"'s 3; "fresh" (no disconnect time: its
	// client was connected until the move) gets the whole interval.
	for deadline := time.Now().Add(2 * time.Second); b.HasSession("moved"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("moved session still there 2 s after adoption: its countdown restarted")
		}
	}
	if !b.HasSession("fresh") {
		t.Fatal("a session adopted without a disconnect time expired early")
	}
}

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
