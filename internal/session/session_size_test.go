package session

import (
	"testing"
	"unsafe"
)

var sizeSink *Session

// Every session, idle clients' included, holds what New allocates: the
// Session alone, in the 256-byte size class (288 before the memory of
// taken messages moved behind a pointer). Its maps are made on first use
// (an inbound QoS 2 message, an alias, a latest-value delivery, a taken
// origin). Above 240 on purpose: net/http leaves a 240-byte object per
// WebSocket upgrade, and a live record in its class keeps its spans
// resident once freed.
func TestNewSessionBudget(t *testing.T) {
	if size := unsafe.Sizeof(Session{}); size > 256 || size <= 240 {
		t.Fatalf("Session is %d bytes, budget 241-256", size)
	}
	if n := testing.AllocsPerRun(100, func() { sizeSink = New("c", Limits{}) }); n > 1 {
		t.Fatalf("New makes %v allocations, budget 1", n)
	}
}
