package session

import (
	"testing"
	"unsafe"
)

var sizeSink *Session

// Every session, idle clients' included, holds what New allocates: the
// Session alone, in its 288-byte size class. Its maps are made on first
// use (an inbound QoS 2 message, an alias, a latest-value delivery).
func TestNewSessionBudget(t *testing.T) {
	if size := unsafe.Sizeof(Session{}); size > 288 {
		t.Fatalf("Session is %d bytes, budget 288", size)
	}
	if n := testing.AllocsPerRun(100, func() { sizeSink = New("c", Limits{}) }); n > 1 {
		t.Fatalf("New makes %v allocations, budget 1", n)
	}
}
