package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// A burst of work (thousands of clients connecting, a reconnect storm, a
// backlog drained) leaves garbage and free pages behind it: with the
// collector's headroom the process keeps up to about twice its live heap
// resident until more allocation triggers the next collection, which a
// broker serving idle connections may not do for hours. trimWhenQuiet
// gives that memory back once the process has gone quiet. A busy process
// is never trimmed (its collections do the work); one that allocates a
// trickle is trimmed only each time the heap has grown again by the
// amount worth a trim (see trimmer), a quarter of the growth after which
// Go's default target would collect anyway.
const (
	trimTick = 200 * time.Millisecond
	// trimQuiet: allocation per tick below which the process is quiet
	// (1.25 MiB/s: no connection storm, no steady stream of new messages).
	trimQuiet = 256 << 10
	// trimMin is the least reclaimable memory worth a collection.
	trimMin = 8 << 20
	// trimGap bounds how often a trim runs whatever the heap does.
	trimGap = time.Second
)

// heapReading is what the trimmer decides from.
type heapReading struct {
	allocs uint64 // bytes allocated since the start (cumulative)
	held   uint64 // heap memory taken from the OS and not given back
	live   uint64 // heap marked live by the last collection
}

// trimmer decides when to trim: when the last tick was quiet, the heap
// holds at least trimMin and a quarter of the live heap beyond what was
// live and beyond what it held after the last trim (fragmentation a trim
// cannot give back), and the last trim is trimGap old.
type trimmer struct {
	last     heapReading
	lastTrim time.Time
	floor    uint64 // held right after the last trim
}

// tick takes this tick's reading and reports whether to trim now.
func (t *trimmer) tick(r heapReading, now time.Time) bool {
	quiet := t.last.allocs != 0 && r.allocs-t.last.allocs < trimQuiet
	t.last = r
	if !quiet || now.Sub(t.lastTrim) < trimGap || r.held < r.live {
		return false
	}
	spare, grown := r.held-r.live, r.held-min(r.held, t.floor)
	worth := max(trimMin, r.live/4)
	if spare < worth || grown < worth {
		return false
	}
	t.lastTrim = now
	return true
}

// trimmed notes what the heap holds right after a trim.
func (t *trimmer) trimmed(r heapReading) { t.floor = r.held }

var trimSamples = []metrics.Sample{
	{Name: "/gc/heap/allocs:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
	{Name: "/gc/heap/live:bytes"},
	{Name: "/gc/gogc:percent"},
}

func readHeap() heapReading {
	metrics.Read(trimSamples)
	v := func(i int) uint64 {
		if trimSamples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return trimSamples[i].Value.Uint64()
	}
	return heapReading{allocs: v(0), held: v(1) + v(2) + v(3), live: v(4)}
}

// trimWhenQuiet runs the trimmer until ctx ends. With the collector off
// (gc_percent -1, GOGC=off) it does nothing: the operator chose no
// collections.
func trimWhenQuiet(ctx context.Context) {
	metrics.Read(trimSamples)
	if gc := trimSamples[5].Value; gc.Kind() == metrics.KindUint64 && int64(gc.Uint64()) < 0 {
		return
	}
	var t trimmer
	tk := time.NewTicker(trimTick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			if t.tick(readHeap(), now) {
				debug.FreeOSMemory()
				t.trimmed(readHeap())
			}
		}
	}
}
