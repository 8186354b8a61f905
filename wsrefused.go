package starling

import (
	"log/slog"
	"net/http"
	"sync"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/limit"
)

// maxLoggedOrigins bounds the origins remembered as already logged; past
// it, refusals from new origins are still logged, within the audit budget.
const maxLoggedOrigins = 1024

// originRefusals logs a WebSocket upgrade refused for its Origin once per
// origin, within the audit lines' budget (auth.audit_lines_per_second): a
// page from another origin sees only a closed socket, so the broker's log
// is where a developer learns why and how to allow it.
type originRefusals struct {
	lines *limit.Lines
	mu    sync.Mutex
	seen  map[string]bool
	// record, if set, gets every refusal for the event history (the
	// dashboard's Refusals view), repeats included.
	record func(broker.Event)
}

func newOriginRefusals(lines *limit.Lines) *originRefusals {
	return &originRefusals{lines: lines, seen: make(map[string]bool)}
}

// hook returns the transport's OnOriginRefused callback for a listener.
func (o *originRefusals) hook(listener string) func(*http.Request) {
	return func(r *http.Request) {
		origin := r.Header.Get("Origin")
		if o.record != nil {
			o.record(broker.Event{Kind: broker.EventOriginRefused, Remote: r.RemoteAddr, Listener: listener,
				Reason: "WebSocket upgrade from origin " + origin + " not in websocket.allowed_origins"})
		}
		o.mu.Lock()
		seen := o.seen[origin]
		if !seen && len(o.seen) < maxLoggedOrigins {
			o.seen[origin] = true
		}
		o.mu.Unlock()
		if seen || !o.lines.OK() {
			return
		}
		o.lines.Log(slog.LevelWarn, "websocket origin refused", slog.String("origin", origin), slog.String("host", r.Host),
			slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr), slog.String("listener", listener),
			slog.String("hint", "to let pages from this origin connect, add it to websocket.allowed_origins (logged once per origin)"))
	}
}
