//go:build starling_poison

package session

import (
	"bytes"
	"testing"

	"github.com/starling-mqtt/starling/internal/bufpool"
)

// TestPoisonedOnRelease checks the starling_poison build: a pooled
// message's payload buffer is overwritten when its last reference goes,
// so that a holder without a reference reads poison, not a payload.
func TestPoisonedOnRelease(t *testing.T) {
	bp := bufpool.Get(100)
	copy(*bp, bytes.Repeat([]byte("x"), 100))
	m := NewPooled()
	m.Topic, m.Payload = "t", (*bp)[:100]
	m.Own(bp)
	payload := m.Payload
	m.Unref()
	if !bytes.Equal(payload, bytes.Repeat([]byte{0xDB}, 100)) {
		t.Fatalf("released payload not poisoned: %q", payload[:8])
	}
}
