package starling

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/limit"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A refused Origin is logged once per origin, with the key that allows it.
func TestOriginRefusalsLoggedOncePerOrigin(t *testing.T) {
	var buf syncBuf
	o := newOriginRefusals(limit.NewLines(slog.New(slog.NewTextHandler(&buf, nil)), 100))
	hook := o.hook("http")
	for _, origin := range []string{"https://a.example", "https://a.example", "https://b.example", "https://a.example"} {
		r := httptest.NewRequest("GET", "http://broker.test/mqtt", nil)
		r.Header.Set("Origin", origin)
		hook(r)
	}
	out := buf.String()
	if n := strings.Count(out, `msg="websocket origin refused"`); n != 2 {
		t.Fatalf("%d lines, want 2 (one per origin):\n%s", n, out)
	}
	for _, want := range []string{"origin=https://a.example", "origin=https://b.example", "websocket.allowed_origins", "path=/mqtt", "listener=http"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// Every refused Origin, repeats included, goes to the event history.
func TestOriginRefusalsRecorded(t *testing.T) {
	o := newOriginRefusals(limit.NewLines(slog.New(slog.DiscardHandler), 100))
	var mu sync.Mutex
	var got []broker.Event
	o.record = func(e broker.Event) { mu.Lock(); got = append(got, e); mu.Unlock() }
	hook := o.hook("http")
	for range 3 {
		r := httptest.NewRequest("GET", "http://broker.test/mqtt", nil)
		r.Header.Set("Origin", "https://evil.example")
		hook(r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[0].Kind != broker.EventOriginRefused || got[0].Listener != "http" || !strings.Contains(got[0].Reason, "https://evil.example") {
		t.Errorf("recorded %+v", got)
	}
}
