package limit

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A trail with kinds sums up its suppressed lines once, by kind.
func TestTrailKinds(t *testing.T) {
	var buf lockedBuf
	l := NewTrailKinds(slog.New(slog.NewTextHandler(&buf, nil)), 1, "connection", "connected", "disconnected")
	l.Interval = 10 * time.Millisecond
	allowed := 0
	for _, k := range []int{0, 0, 0, 1, 1} {
		if l.OKKind(k) {
			allowed++
		}
	}
	if allowed != 1 {
		t.Fatalf("%d lines allowed, want the burst of 1", allowed)
	}
	want := `msg="connection lines suppressed" count=4 connected=2 disconnected=2`
	for deadline := time.Now().Add(time.Minute); !strings.Contains(buf.String(), want); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in:\n%s", want, buf.String())
		}
	}
	if n := strings.Count(buf.String(), "lines suppressed"); n != 1 {
		t.Fatalf("%d summaries, want 1:\n%s", n, buf.String())
	}
}
