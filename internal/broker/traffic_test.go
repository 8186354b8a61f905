package broker

import (
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	h.Observe(50 * time.Microsecond) // first bucket (0.1 ms)
	h.Observe(3 * time.Millisecond)  // 5 ms bucket
	h.Observe(10 * time.Second)      // +Inf only
	b, count, sum := h.Snapshot()
	if count != 3 || b[0.0001] != 1 || b[0.0025] != 1 || b[0.005] != 2 || b[2.5] != 2 {
		t.Errorf("buckets %v count %d", b, count)
	}
	if sum < 10.003 || sum > 10.0031 {
		t.Errorf("sum %v, want 10.00305", sum)
	}
}
