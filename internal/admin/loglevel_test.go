package admin

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogLevel(t *testing.T) {
	var out syncBuffer
	lv := new(slog.LevelVar) // info
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: lv}))
	_, srv, _ := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}, Logger: log, LogLevel: lv})

	// Credentials are required to read or change it.
	for _, c := range []string{"", "admin:wrong"} {
		if code, _, _ := do(t, srv, "GET", "/api/v1/log-level", c, ""); code != 401 {
			t.Errorf("GET log-level with %q: %d, want 401", c, code)
		}
		if code, _, _ := do(t, srv, "PUT", "/api/v1/log-level", c, `{"level":"debug"}`); code != 401 {
			t.Errorf("PUT log-level with %q: %d, want 401", c, code)
		}
	}
	if lv.Level() != slog.LevelInfo {
		t.Fatalf("level changed without credentials: %v", lv.Level())
	}
	if code, body, _ := do(t, srv, "GET", "/api/v1/log-level", creds, ""); code != 200 || !strings.Contains(body, `"level": "info"`) {
		t.Errorf("GET log-level: %d %s", code, body)
	}

	log.Debug("before the change")
	code, body, _ := do(t, srv, "PUT", "/api/v1/log-level", creds, `{"level":"debug"}`)
	if code != 200 || !strings.Contains(body, `"level": "debug"`) {
		t.Fatalf("PUT debug: %d %s", code, body)
	}
	log.Debug("after the change")
	if s := out.String(); strings.Contains(s, "before the change") || !strings.Contains(s, "after the change") ||
		!strings.Contains(s, "log level changed by admin") {
		t.Errorf("log output:\n%s", s)
	}
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("debug not enabled after PUT debug")
	}

	for _, bad := range []string{`{"level":"loud"}`, `{"level":""}`, `{}`, `{"level":"info","x":1}`, `not json`} {
		if code, _, _ := do(t, srv, "PUT", "/api/v1/log-level", creds, bad); code != 400 {
			t.Errorf("PUT %s: %d, want 400", bad, code)
		}
	}
	if lv.Level() != slog.LevelDebug {
		t.Errorf("a bad request changed the level to %v", lv.Level())
	}
	if code, _, _ := do(t, srv, "PUT", "/api/v1/log-level", creds, `{"level":"WARN"}`); code != 200 || lv.Level() != slog.LevelWarn {
		t.Errorf("PUT WARN: %d, level %v", code, lv.Level())
	}
}

// Without a level variable the endpoint says it cannot.
func TestLogLevelNotChangeable(t *testing.T) {
	_, srv, _ := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	if code, _, _ := do(t, srv, "PUT", "/api/v1/log-level", creds, `{"level":"debug"}`); code != 501 {
		t.Errorf("PUT without LogLevel: %d, want 501", code)
	}
}
