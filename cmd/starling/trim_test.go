package main

import (
	"testing"
	"time"
)

// TestTrimmerTrimsOnceQuiet checks when the trimmer gives memory back: not
// while the process allocates, not for a heap holding little beyond what is
// live, once it goes quiet after a burst, and not again for trimGap nor
// for memory a trim left held.
func TestTrimmerTrimsOnceQuiet(t *testing.T) {
	const mib = 1 << 20
	var tr trimmer
	now := time.Unix(1000, 0)
	step := func(allocs, held, live uint64) bool {
		now = now.Add(trimTick)
		return tr.tick(heapReading{allocs: allocs, held: held, live: live}, now)
	}
	if step(100*mib, 20*mib, 5*mib) {
		t.Fatal("trimmed on the first reading (no rate known yet)")
	}
	// A burst: 40 MiB held, 20 live, but allocating 5 MiB a tick.
	allocs := uint64(100 * mib)
	for range 10 {
		allocs += 5 * mib
		if step(allocs, 40*mib, 20*mib) {
			t.Fatal("trimmed while allocating")
		}
	}
	// Quiet, but little beyond the live heap: nothing to win.
	if step(allocs+1024, 24*mib, 20*mib) {
		t.Fatal("trimmed 4 MiB above a 20 MiB live heap")
	}
	// Quiet, 20 MiB spare: trim.
	if !step(allocs+2048, 40*mib, 20*mib) {
		t.Fatal("did not trim 20 MiB spare once quiet")
	}
	tr.trimmed(heapReading{allocs: allocs + 4096, held: 30 * mib, live: 20 * mib})
	// Within trimGap: not again, whatever the heap holds.
	if step(allocs+8192, 80*mib, 20*mib) {
		t.Fatal("trimmed again within trimGap")
	}
	now = now.Add(trimGap)
	// After the gap, what the last trim left held (fragmentation) does
	// not count: 30 MiB held, 10 spare, but nothing grew since.
	if step(allocs+9000, 30*mib, 20*mib) {
		t.Fatal("trimmed what the last trim could not give back")
	}
	if !step(allocs+10000, 60*mib, 20*mib) {
		t.Fatal("did not trim after trimGap with the heap grown again")
	}
}

// TestReadHeap checks that the runtime metrics the trimmer reads exist.
func TestReadHeap(t *testing.T) {
	r := readHeap()
	if r.allocs == 0 || r.held == 0 || r.held < r.live {
		t.Fatalf("reading %+v: a metric is missing", r)
	}
}
