package main

import (
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/starling-mqtt/starling/internal/config"
)

// tuneRuntime sets the collector's memory limit and target from the
// configuration (limits.memory_limit, limits.gc_percent), unless the
// operator set GOMEMLIMIT or GOGC, which win; it logs what holds. It is
// the binary's business, not the embedding API's: the runtime is the
// process's, and an application that embeds Starling owns it. With
// gc_percent 0 (derived) the target is Go's 100, raised to a heap floor
// of a 32nd of the memory limit, at most 64 MiB, while the broker
// allocates enough for ten cycles a second (gcFloor); the returned function
// stops the floor.
func tuneRuntime(l config.Limits, getenv func(string) string, log *slog.Logger) (stop func()) {
	stop = func() {}
	limit, limitFrom := l.RuntimeMemoryLimit(), "limits.memory_limit"
	if l.MemoryLimit == 0 {
		limitFrom = "derived from limits.max_total_queued_bytes"
	}
	switch {
	case getenv("GOMEMLIMIT") != "":
		limit, limitFrom = debug.SetMemoryLimit(-1), "GOMEMLIMIT" // -1 reads it
		if limit == math.MaxInt64 {                               // GOMEMLIMIT=off
			limit, limitFrom = 0, "none (GOMEMLIMIT=off)"
		}
	case limit > 0:
		debug.SetMemoryLimit(limit)
	default:
		limitFrom = "none"
	}
	var gc any = l.GCPercent
	gcFrom := "limits.gc_percent"
	switch {
	case getenv("GOGC") != "":
		gc, gcFrom = getenv("GOGC"), "GOGC" // the runtime read it at start
	case l.GCPercent == 0 && derivedGCFloor(limit) > 0:
		floor := derivedGCFloor(limit)
		gc, gcFrom = fmt.Sprintf("100, a heap of %d MiB when busy", floor>>20), "derived from the memory limit"
		f := &gcFloor{floor: floor, base: 100}
		f.start()
		stop = f.end
	case l.GCPercent == 0:
		gc, gcFrom = 100, "Go's default"
		debug.SetGCPercent(100)
	default:
		debug.SetGCPercent(l.GCPercent)
	}
	attrs := []any{"gc_percent", gc, "gc_percent_from", gcFrom, "memory_limit_from", limitFrom}
	if limit > 0 {
		attrs = append(attrs, "memory_limit", limit)
	}
	log.Info("runtime memory settings", attrs...)
	return stop
}
