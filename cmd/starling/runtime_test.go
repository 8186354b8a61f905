package main

import (
	"bytes"
	"log/slog"
	"runtime/debug"
	"strings"
	"testing"

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
}
