package broker

import (
	"testing"
	"unsafe"
)

// Every connection, idle ones included, holds a handler: it stays in the
// 320-byte allocation class (see docs/benchmarks.md, idle memory). A field
// that pushes it past needs a place elsewhere, or a new budget here with
// the idle figures measured again.
func TestHandlerSizeBudget(t *testing.T) {
	if size := unsafe.Sizeof(handler{}); size > 320 {
		t.Fatalf("handler is %d bytes, budget 320", size)
	}
}
