package main

import (
	"bytes"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
)

// TestTuneRuntime checks that the configuration sets the collector's
// target and memory limit, derived from the queued-bytes bound by
// default, and that GOGC and GOMEMLIMIT from the environment win.
func TestTuneRuntime(t *testing.T) {
	oldGC, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(oldGC); debug.SetMemoryLimit(oldLimit) })
	noEnv := func(string) string { return "" }
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))

	l := config.Default().Limits
	l.GCPercent, l.MaxTotalQueuedBytes = 300, 64<<20
	tuneRuntime(l, noEnv, logger)
	if got := debug.SetGCPercent(100); got != 300 {
		t.Errorf("gc_percent 300: runtime has %d", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 2*(64<<20)+512<<20 {
		t.Errorf("derived memory limit: runtime has %d", got)
	}
	if !strings.Contains(log.String(), "memory_limit_from=\"derived from limits.max_total_queued_bytes\"") {
		t.Errorf("log does not say where the limit came from:\n%s", log.String())
	}

	l.MemoryLimit = 3 << 30
	tuneRuntime(l, noEnv, logger)
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Errorf("memory_limit 3 GiB: runtime has %d", got)
	}

	// The operator's environment wins: the values set before stay.
	debug.SetGCPercent(150)
	debug.SetMemoryLimit(1 << 40)
	log.Reset()
	env := map[string]string{"GOGC": "150", "GOMEMLIMIT": "1TiB"}
	tuneRuntime(l, func(k string) string { return env[k] }, logger)
	if got := debug.SetGCPercent(100); got != 150 {
		t.Errorf("GOGC set: runtime has gc percent %d, want 150", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<40 {
		t.Errorf("GOMEMLIMIT set: runtime has limit %d", got)
	}
	if s := log.String(); !strings.Contains(s, "gc_percent_from=GOGC") || !strings.Contains(s, "memory_limit_from=GOMEMLIMIT") {
		t.Errorf("log does not credit the environment:\n%s", s)
	}

	// GOMEMLIMIT=off: no limit, said so, and no floor derived from one.
	debug.SetMemoryLimit(math.MaxInt64)
	log.Reset()
	l.GCPercent = 0
	stop := tuneRuntime(l, func(k string) string { return map[string]string{"GOMEMLIMIT": "off"}[k] }, logger)
	stop()
	s := log.String()
	if !strings.Contains(s, `memory_limit_from="none (GOMEMLIMIT=off)"`) || strings.Contains(s, "memory_limit=") ||
		!strings.Contains(s, `gc_percent_from="Go's default"`) {
		t.Errorf("GOMEMLIMIT=off: log says\n%s", s)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("GOMEMLIMIT=off: runtime has limit %d", got)
	}
}

// TestFloorPercent: the percent puts the next heap goal at the floor while
// the live heap is below half of it, and is Go's 100 above.
func TestFloorPercent(t *testing.T) {
	const M = 1 << 20
	for _, c := range []struct {
		floor, live, scan uint64
		want              int
	}{
		{32 * M, 4 * M, 4 * M, 700},       // 4 MiB live: goal 32 MiB
		{32 * M, 4 * M, 8 * M, 350},       // stacks and globals of 4 MiB count too
		{32 * M, 16 * M, 16 * M, 100},     // half the floor: Go's own goal reaches it
		{32 * M, 100 * M, 100 * M, 100},   // above the floor
		{32 * M, 0, 1 * M, 100},           // no cycle yet
		{32 * M, 1, 1, gcFloorPercentMax}, // bounded
		{0, 4 * M, 4 * M, 100},
	} {
		if got := floorPercent(100, c.floor, c.live, c.scan); got != c.want {
			t.Errorf("floorPercent(100, %d, %d, %d) = %d, want %d", c.floor, c.live, c.scan, got, c.want)
		}
	}
	for limit, want := range map[int64]uint64{-1: 0, 0: 0, 512 * M: 16 * M, 2560 * M: 64 * M} {
		if got := derivedGCFloor(limit); got != want {
			t.Errorf("derivedGCFloor(%d) = %d, want %d", limit, got, want)
		}
	}
}

// TestFloorBusy: the floor comes into force when Go's own cycles would
// come less than 100 ms apart and stays until they would come 2 s apart.
func TestFloorBusy(t *testing.T) {
	for _, c := range []struct {
		was   bool
		every time.Duration
		want  bool
	}{
		{false, 50 * time.Millisecond, true},
		{false, 200 * time.Millisecond, false}, // a connection storm
		{true, 500 * time.Millisecond, true},   // the floor working
		{true, 3 * time.Second, false},         // quiet again
	} {
		if got := floorBusy(c.was, c.every); got != c.want {
			t.Errorf("floorBusy(%v, %v) = %v, want %v", c.was, c.every, got, c.want)
		}
	}
}

// TestOwnCycleEvery: how far apart Go's own cycles would come follows
// the allocation rate against what the last cycle scanned.
func TestOwnCycleEvery(t *testing.T) {
	const M = 1 << 20
	for _, c := range []struct {
		scan, allocated uint64
		elapsed         time.Duration
		want            time.Duration
	}{
		{4 * M, 40 * M, time.Second, 100 * time.Millisecond},
		{4 * M, 400 * M, time.Second, 10 * time.Millisecond},
		{1 * M, 64 * M, 3200 * time.Millisecond, 50 * time.Millisecond},
		{4 * M, 0, time.Second, time.Hour},
		{4 * M, 4 * M, 0, time.Hour},
	} {
		if got := ownCycleEvery(100, c.scan, c.allocated, c.elapsed); got != c.want {
			t.Errorf("ownCycleEvery(100, %d, %d, %v) = %v, want %v", c.scan, c.allocated, c.elapsed, got, c.want)
		}
	}
	// A steady 20 MiB/s over a 1 MiB heap, the floor of 64 MiB in force:
	// the floor's own cycles come 3.2 s apart, but Go's would come 50 ms
	// apart, so the floor stays (judged by the cycles' spacing, it went
	// off here and came back a cycle later).
	if !floorBusy(true, ownCycleEvery(100, 1*M, 64*M, 3200*time.Millisecond)) {
		t.Error("a steady load under the floor switched it off")
	}
}

var allocSink []byte

// allocate makes n MiB of garbage.
func allocate(n int) {
	for range n {
		allocSink = make([]byte, 1<<20)
	}
}

// TestGCFloorFollowsAllocation: an allocation rate at which Go's own
// cycles would come less than 100 ms apart brings the floor into force
// (the percent rises for the test binary's small live heap); a rate at
// which they would come 2 s apart or more puts Go's 100 back.
func TestGCFloorFollowsAllocation(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	f := &gcFloor{floor: 256 << 20, base: 100}
	f.init()
	runtime.GC()
	at := time.Now()
	f.adjust(at)
	if got := gcPercent(); got != 100 {
		t.Fatalf("before any load: percent %d, want 100", got)
	}
	allocate(64)
	at = at.Add(10 * time.Millisecond)
	f.adjust(at)
	if got := gcPercent(); got <= 100 {
		t.Fatalf("64 MiB allocated in 10 ms: percent %d, want above 100", got)
	}
	allocate(64)
	at = at.Add(300 * time.Millisecond)
	f.adjust(at)
	if got := gcPercent(); got <= 100 {
		t.Fatalf("64 MiB in 300 ms, the floor in force: percent %d, want above 100", got)
	}
	at = at.Add(time.Hour)
	f.adjust(at)
	if got := gcPercent(); got != 100 {
		t.Fatalf("an hour with next to nothing allocated: percent %d, want 100", got)
	}
	f.end()
	if f.adjust(at.Add(time.Millisecond)) {
		t.Fatal("adjust after end: still armed")
	}
}

// TestTuneRuntimeGCFloor: gc_percent 0 starts the floor and says so; the
// returned function ends it with Go's 100 in force; an operator's
// gc_percent is kept as it is.
func TestTuneRuntimeGCFloor(t *testing.T) {
	oldGC, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(oldGC); debug.SetMemoryLimit(oldLimit) })
	noEnv := func(string) string { return "" }
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))

	l := config.Default().Limits // gc_percent 0, a derived limit of 2.5 GiB
	stop := tuneRuntime(l, noEnv, logger)
	if !strings.Contains(log.String(), "gc_percent_from=\"derived from the memory limit\"") ||
		!strings.Contains(log.String(), "64 MiB when busy") {
		t.Errorf("log does not say the target is derived:\n%s", log.String())
	}
	stop()
	if got := gcPercent(); got != 100 {
		t.Errorf("after stop: gc percent %d, want 100", got)
	}
	l.GCPercent = 150
	stop = tuneRuntime(l, noEnv, logger)
	defer stop()
	runtime.GC()
	runtime.GC()
	if got := gcPercent(); got != 150 {
		t.Errorf("gc_percent 150: runtime has %d", got)
	}
}

func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
