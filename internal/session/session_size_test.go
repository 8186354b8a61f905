package session

import (
	"testing"
	"unsafe"
)

var sizeSink *Session

// Every session, idle clients' included, holds what New allocates: the
// Session alone, in the 224-byte size class (288 before the memory of
// taken messages moved behind a pointer, 256 before its limits were
// interned). Its maps are made on first use (an inbound QoS 2 message, an
// alias, a latest-value delivery, a taken origin). Not in the 240-byte
// class: net/http leaves a 240-byte object per WebSocket upgrade, and a
// live record in its class keeps its spans resident once freed; nor in
// the 208-byte one, which garbage of every connect uses.
func TestNewSessionBudget(t *testing.T) {
	if size := unsafe.Sizeof(Session{}); size > 224 || size <= 208 {
		t.Fatalf("Session is %d bytes, budget 209-224", size)
	}
	if n := testing.AllocsPerRun(100, func() { sizeSink = New("c", Limits{}) }); n > 1 {
		t.Fatalf("New makes %v allocations, budget 1", n)
	}
}
