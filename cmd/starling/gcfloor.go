package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// A broker's live heap is small next to what a message load allocates:
// a few MiB of sessions and buffers, against tens of MiB/s of message
// records at QoS 1 and hundreds of MiB/s of 64 KiB bodies. With Go's
// default target a cycle starts each time the heap grows by its live
// size: 12 cycles a second at 10k QoS 1 msg/s, hundreds under 64 KiB
// QoS 1 fan-in. On the one core a broker is often given, each cycle's
// mark work and assists take that core for a while, and the messages
// waiting behind them make the latency tail.
//
// gcFloor raises the collector's goal to a heap floor while the broker
// allocates fast enough that Go's own target would collect more than ten
// times a second: after each cycle it sets the GC percent so that the
// next cycle starts at floor bytes of heap, or at Go's 100% of the live
// heap once that is larger. A connection storm, which would collect a
// few times a second, or an idle broker, keeps Go's target, and so its
// idle memory.
//
// Whether the floor is in force is judged from the allocation rate
// against the live heap (how far apart Go's own cycles would come), not
// from how far apart the cycles do come: the floor itself spaces them
// out, so judging by their spacing switched it off under a steady load
// that allocates a few MiB a second over a small heap, and on again a
// cycle later.
type gcFloor struct {
	floor uint64
	base  int // the GC percent otherwise (Go's 100)

	mu      sync.Mutex // orders adjust and end; guards what follows
	stopped bool
	busy    bool // the floor is in force
	lastAt  time.Time
	lastN   uint64            // bytes allocated, at lastAt
	heap    [4]metrics.Sample // allocated, live heap, stacks, globals
	goal    [1]metrics.Sample
}

// gcFloorMax is the largest derived heap floor: the garbage a busy
// broker may hold beyond its live heap between two cycles; the trimmer
// (trim.go) gives it back once the broker goes quiet.
const gcFloorMax = 64 << 20

// gcFloorPercentMax bounds the percent the floor sets, for a live heap
// so small that the ratio means nothing.
const gcFloorPercentMax = 2000

// The floor comes into force when Go's own cycles would come less than
// gcFloorOn apart, and goes when they would come gcFloorOff apart or
// more: with the floor, a load that allocates 30 MiB/s collects about
// twice a second.
const (
	gcFloorOn  = 100 * time.Millisecond
	gcFloorOff = 2 * time.Second
)

// derivedGCFloor is the heap floor for a memory limit: a 32nd of it, at
// most gcFloorMax; none without a limit.
func derivedGCFloor(limit int64) uint64 {
	if limit <= 0 {
		return 0
	}
	return uint64(min(limit/32, gcFloorMax))
}

// floorBusy reports whether the floor is in force when Go's own cycles
// would come every apart, given whether it was.
func floorBusy(was bool, every time.Duration) bool {
	if was {
		return every < gcFloorOff
	}
	return every < gcFloorOn
}

// floorPercent is the GC percent that puts the heap goal at floor after
// a cycle that left live bytes, never below base. Go's goal is live plus
// the percent of what the cycle scanned (the live heap, goroutine stacks
// and globals: scan). Before the first cycle (live 0) it is base.
func floorPercent(base int, floor, live, scan uint64) int {
	if live == 0 || floor <= live {
		return base
	}
	p := (floor - live) * 100 / max(scan, live, 1)
	return max(base, int(min(p, gcFloorPercentMax)))
}

// ownCycleEvery is how far apart Go's cycles would come at the base
// percent: a cycle each time the heap grows by base% of what the last
// one scanned, at the rate of allocated bytes over elapsed. With nothing
// allocated it is a long time.
func ownCycleEvery(base int, scan, allocated uint64, elapsed time.Duration) time.Duration {
	if allocated == 0 || elapsed <= 0 {
		return time.Hour
	}
	growth := float64(max(scan, 1)) * float64(base) / 100
	return time.Duration(growth / float64(allocated) * float64(elapsed))
}

// start watches the collector until end.
func (f *gcFloor) start() {
	f.init()
	f.adjust(time.Now())
	f.arm()
}

func (f *gcFloor) init() {
	f.heap[0].Name, f.heap[1].Name = "/gc/heap/allocs:bytes", "/gc/heap/live:bytes"
	f.heap[2].Name, f.heap[3].Name = "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"
	f.goal[0].Name = "/gc/heap/goal:bytes"
}

// arm has adjust run once the next collection has finished: a cleanup
// on an object nothing refers to runs after the cycle that finds it
// unreachable.
func (f *gcFloor) arm() {
	s := new(gcSentinel)
	runtime.AddCleanup(s, func(f *gcFloor) {
		if f.adjust(time.Now()) {
			f.arm()
		}
	}, f)
}

// gcSentinel holds a pointer so that it is not a tiny allocation, whose
// cleanups may run late or never.
type gcSentinel struct{ _ *int }

// adjust sets the percent for the allocation rate since the last call
// and the live heap the last cycle left; it reports false once the floor has ended.
func (f *gcFloor) adjust(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.heap[:])
	for _, s := range f.heap {
		if s.Value.Kind() != metrics.KindUint64 {
			return true
		}
	}
	n, live := f.heap[0].Value.Uint64(), f.heap[1].Value.Uint64()
	scan := live + f.heap[2].Value.Uint64() + f.heap[3].Value.Uint64()
	if !f.lastAt.IsZero() && n >= f.lastN {
		f.busy = floorBusy(f.busy, ownCycleEvery(f.base, scan, n-f.lastN, now.Sub(f.lastAt)))
	}
	f.lastAt, f.lastN = now, n
	p := f.base
	if f.busy {
		p = floorPercent(f.base, f.floor, live, scan)
	}
	// Set each time (it is cheap: the heap lock, no pause), so that a
	// percent changed by anyone else is corrected at the next cycle.
	debug.SetGCPercent(p)
	if p > f.base {
		// The runtime's goal counts what its last scan saw, which may be
		// more than the metrics above: scale to the goal it computed.
		metrics.Read(f.goal[:])
		if g := f.goal[0].Value; g.Kind() == metrics.KindUint64 && g.Uint64() > f.floor && g.Uint64() > live {
			debug.SetGCPercent(max(f.base, int(uint64(p)*(f.floor-live)/(g.Uint64()-live))))
		}
	}
	return true
}

// end stops the floor and puts the percent back to base.
func (f *gcFloor) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	debug.SetGCPercent(f.base)
}
