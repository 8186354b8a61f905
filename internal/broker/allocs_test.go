package broker

import (
	"fmt"
	"runtime"
	"testing"
)

// maxAllocsPerPublish bounds the allocations per QoS 0 publish in steady
// state. The path allocates nothing per message; what a run may still see
// is a pool refilled after a collection empties it, far fewer than one per
// ten publishes. One allocation per message anywhere on the path fails.
const maxAllocsPerPublish = 0.1

// mallocs returns the heap allocations made so far by the whole process.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// TestPublishFanoutNoAllocs keeps BenchmarkPublishFanout at 0 allocations
// per QoS 0 message: decode, match, per-subscriber bookkeeping, encoding
// and the writers' batched writes, after a warm-up that fills the pools.
func TestPublishFanoutNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items)")
	}
	for _, n := range []int{1, 100} {
		t.Run(fmt.Sprintf("subs=%d", n), func(t *testing.T) {
			rig := newFanoutRig(t, n)
			defer rig.close()
			rig.publish(t, 2048)
			// In steps the writers finish before the next: a busy machine
			// that starves them otherwise lets 256 publishes pile up in
			// 100 queues, whose growth is the machine's, not the path's.
			const count, step = 10000, 16
			before := mallocs()
			for range count / step {
				rig.publish(t, step)
			}
			perPublish := float64(mallocs()-before) / count
			t.Logf("%.4f allocations per publish to %d subscribers", perPublish, n)
			if perPublish > maxAllocsPerPublish {
				t.Fatalf("%.3f allocations per QoS 0 publish to %d subscribers, want 0 (at most %v from pool refills)", perPublish, n, maxAllocsPerPublish)
			}
		})
	}
}

// TestPublishPathNoAllocs keeps BenchmarkPublishPath at 0 allocations per
// QoS 0 message, from the publisher's read to the subscriber's write, with
// no store and with the memory store (the QoS 0 operation a store sees).
func TestPublishPathNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items)")
	}
	for _, kind := range []string{"none", "memory"} {
		t.Run("store="+kind, func(t *testing.T) {
			const warm, count = 2048, 2048 + 10000
			var before, after uint64
			runPublishPath(t, kind, count, func(sent int) {
				switch sent {
				case warm:
					before = mallocs()
				case count:
					after = mallocs()
				}
			})
			perPublish := float64(after-before) / (count - warm)
			t.Logf("%.4f allocations per publish", perPublish)
			if perPublish > maxAllocsPerPublish {
				t.Fatalf("%.3f allocations per QoS 0 publish, want 0 (at most %v from pool refills)", perPublish, maxAllocsPerPublish)
			}
		})
	}
}
