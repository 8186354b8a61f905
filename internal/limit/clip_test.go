package limit

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestClipValue(t *testing.T) {
	if got := ClipValue("short", 8); got != "short" {
		t.Fatalf("short value changed: %q", got)
	}
	a, b := strings.Repeat("a", 100), strings.Repeat("a", 99)+"b"
	ca, cb := ClipValue(a, 10), ClipValue(b, 10)
	if !strings.HasPrefix(ca, strings.Repeat("a", 10)+"…(100 bytes, sha256:") || ca == cb {
		t.Fatalf("cut values %q and %q: want the prefix, the length and distinct hashes", ca, cb)
	}
	// A cut never splits a UTF-8 sequence.
	if got := ClipValue("aé"+strings.Repeat("z", 50), 2); !strings.HasPrefix(got, "a…(") {
		t.Fatalf("cut inside a rune: %q", got)
	}
}

func TestClipHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Clip(slog.NewTextHandler(&buf, nil)))
	long := strings.Repeat("x", 65535)
	log.With("username", long).Info("m", "client_id", long, "remote", "127.0.0.1:1",
		slog.Group("g", "topic", long), "err", errors.New(long), "note", strings.Repeat("n", MaxLogValue))
	line := buf.String()
	if n := len(line); n > 4*MaxLogField+2*MaxLogValue+400 {
		t.Fatalf("line of %d bytes: %s", n, line)
	}
	for _, key := range []string{"username", "client_id", "g.topic"} {
		if !strings.Contains(line, key+`="`+strings.Repeat("x", MaxLogField)+`…(65535 bytes, sha256:`) {
			t.Fatalf("%s not cut to %d bytes: %s", key, MaxLogField, line)
		}
	}
	if !strings.Contains(line, `err="`+strings.Repeat("x", MaxLogValue)+"…(") {
		t.Fatalf("err not cut to %d bytes: %s", MaxLogValue, line)
	}
	if !strings.Contains(line, "note="+strings.Repeat("n", MaxLogValue)+"\n") || !strings.Contains(line, "remote=127.0.0.1:1") {
		t.Fatalf("values within the bound changed: %s", line)
	}
}

func BenchmarkClipShortLine(b *testing.B) {
	log := slog.New(Clip(slog.DiscardHandler))
	b.ReportAllocs()
	for b.Loop() {
		log.Info("client connected", "client_id", "sensor-1", "remote", "127.0.0.1:1")
	}
}
