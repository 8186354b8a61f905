package starling

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/starling-mqtt/starling/internal/admin"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/limit"
	"github.com/starling-mqtt/starling/internal/transport"
)

// maxLoggedRefusals bounds the refusals remembered as recently logged;
// past it, new ones are still logged, within the audit budget.
const maxLoggedRefusals = 1024

// refusalLogGap is how often the same refusal (reason, origin, path) is
// logged at most: a page retrying every second logs once a minute.
const refusalLogGap = time.Minute

// refusals counts and logs WebSocket upgrades refused before MQTT starts
// (origin, wrong path, subprotocol, bad handshake) and logins refused on
// the WebSocket listeners: a browser page sees only a closed socket, so
// the broker's log, its metrics and the dashboard's alerts are where a
// developer learns why. Lines share the audit budget
// (auth.audit_lines_per_second), and the same refusal is logged once a
// minute at most.
type refusals struct {
	lines   *limit.Lines
	paths   []string // websocket.paths, for the hints
	now     func() time.Time
	upgrade []atomic.Uint64 // by transport.RefusedReasons index
	auth    atomic.Uint64   // logins refused over WebSocket
	logins  atomic.Uint64   // logins refused on every listener

	mu        sync.Mutex
	logged    map[string]time.Time // refusal key -> last logged
	lastWS    string               // the latest upgrade refusal, for alerts
	lastLogin string               // the latest refused login

	// record, if set, gets every upgrade refusal but plain HTTP requests,
	// repeats included, for the event history (the dashboard's Refusals
	// view).
	record func(broker.Event)
}

func newRefusals(lines *limit.Lines, paths []string) *refusals {
	return &refusals{lines: lines, paths: paths, now: time.Now, upgrade: make([]atomic.Uint64, len(transport.RefusedReasons)),
		logged: make(map[string]time.Time)}
}

// shouldLog reports whether a refusal with key was not logged within the
// last refusalLogGap, and marks it logged.
func (o *refusals) shouldLog(key string) bool {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if t, ok := o.logged[key]; ok && now.Sub(t) < refusalLogGap {
		return false
	}
	if len(o.logged) >= maxLoggedRefusals {
		for k, t := range o.logged {
			if now.Sub(t) >= refusalLogGap {
				delete(o.logged, k)
			}
		}
	}
	if len(o.logged) < maxLoggedRefusals {
		o.logged[key] = now
	}
	return true
}

// hint tells a developer what to change for each refusal reason.
func (o *refusals) hint(reason string) string {
	switch reason {
	case transport.RefusedOrigin:
		return "to let pages from this origin connect, add it to websocket.allowed_origins"
	case transport.RefusedWrongPath:
		return "MQTT over WebSocket is served at " + strings.Join(o.paths, ", ") + " (websocket.paths)"
	case transport.RefusedSubprotocol:
		return `the client must offer the WebSocket subprotocol "mqtt" (MQTT.js does), or set websocket.allow_no_subprotocol`
	case transport.RefusedNotWebSocket:
		return "this URL serves MQTT over WebSocket: connect with an MQTT client to ws:// or wss://"
	case transport.RefusedForwarded:
		return "the X-Forwarded-For and Forwarded headers of a trusted proxy disagree"
	}
	return "not a valid WebSocket handshake (RFC 6455): use a WebSocket client"
}

// hook returns the transport's OnRefused callback for a listener.
func (o *refusals) hook(listener string) func(*http.Request, string) {
	return func(r *http.Request, reason string) {
		if i := slices.Index(transport.RefusedReasons, reason); i >= 0 {
			o.upgrade[i].Add(1)
		}
		origin := r.Header.Get("Origin")
		detail := fmt.Sprintf("%s: origin %q, path %s, listener %s", reason, origin, r.URL.Path, listener)
		if reason != transport.RefusedNotWebSocket { // not an alert (see alerts)
			o.mu.Lock()
			o.lastWS = detail
			o.mu.Unlock()
			if o.record != nil {
				kind, why := broker.EventUpgradeRefused, "WebSocket upgrade refused ("+reason+") at path "+r.URL.Path
				if reason == transport.RefusedOrigin {
					kind, why = broker.EventOriginRefused, "WebSocket upgrade from origin "+origin+" not in websocket.allowed_origins"
				}
				o.record(broker.Event{Kind: kind, Remote: r.RemoteAddr, Listener: listener, Reason: why})
			}
		}
		if !o.shouldLog(reason+"\x00"+origin+"\x00"+r.URL.Path) || !o.lines.OK() {
			return
		}
		msg, level := "websocket upgrade refused", slog.LevelWarn
		if reason == transport.RefusedOrigin {
			msg = "websocket origin refused"
		}
		if reason == transport.RefusedNotWebSocket {
			level = slog.LevelInfo // a health check or a browser tab, most often
		}
		o.lines.Log(level, msg, slog.String("origin", origin), slog.String("host", r.Host), slog.String("path", r.URL.Path),
			slog.String("remote", r.RemoteAddr), slog.String("listener", listener), slog.String("reason", reason),
			slog.String("hint", o.hint(reason)+" (logged once a minute)"))
	}
}

// loginFailed counts a refused login (auth.Auth.OnLoginFailed); the
// authenticator logs it itself, with the origin and path over WebSocket.
func (o *refusals) loginFailed(c *broker.ConnectInfo, reason string) {
	o.logins.Add(1)
	detail := fmt.Sprintf("client %q, user %q, listener %s: %s", c.ClientID, c.Username, c.Listener, reason)
	if c.Path != "" {
		o.auth.Add(1)
		detail = fmt.Sprintf("client %q, user %q, origin %q, path %s: %s", c.ClientID, c.Username, c.Origin, c.Path, reason)
	}
	o.mu.Lock()
	o.lastLogin = detail
	o.mu.Unlock()
}

// alerts reports the counts for the dashboard's alerts.
func (o *refusals) alerts() []admin.Refusal {
	var total uint64
	var by []string
	for i, r := range transport.RefusedReasons {
		if r == transport.RefusedNotWebSocket {
			continue // plain HTTP requests (health checks, a browser tab): not a client that failed
		}
		if n := o.upgrade[i].Load(); n > 0 {
			total += n
			by = append(by, fmt.Sprintf("%s %d", r, n))
		}
	}
	o.mu.Lock()
	lastWS, lastLogin := o.lastWS, o.lastLogin
	o.mu.Unlock()
	out := make([]admin.Refusal, 0, 2)
	if total > 0 {
		out = append(out, admin.Refusal{Kind: "ws_refused", Count: total,
			Detail: fmt.Sprintf("WebSocket upgrades refused (%s); latest: %s", strings.Join(by, ", "), lastWS)})
	}
	if n := o.logins.Load(); n > 0 {
		out = append(out, admin.Refusal{Kind: "auth_refused", Count: n,
			Detail: fmt.Sprintf("logins refused (%d over WebSocket); latest: %s", o.auth.Load(), lastLogin)})
	}
	return out
}

// Describe and Collect make refusals a Prometheus collector:
// mqtt_ws_upgrade_refused_total{reason} and mqtt_ws_auth_refused_total.
var (
	wsRefusedDesc = prometheus.NewDesc("mqtt_ws_upgrade_refused_total",
		"WebSocket upgrade requests refused before MQTT started, by reason.", []string{"reason"}, nil)
	wsAuthRefusedDesc = prometheus.NewDesc("mqtt_ws_auth_refused_total",
		"Logins refused on the WebSocket listeners (also counted in mqtt_auth_failures_total).", nil, nil)
)

func (o *refusals) Describe(ch chan<- *prometheus.Desc) {
	ch <- wsRefusedDesc
	ch <- wsAuthRefusedDesc
}

func (o *refusals) Collect(ch chan<- prometheus.Metric) {
	for i, r := range transport.RefusedReasons {
		ch <- prometheus.MustNewConstMetric(wsRefusedDesc, prometheus.CounterValue, float64(o.upgrade[i].Load()), r)
	}
	ch <- prometheus.MustNewConstMetric(wsAuthRefusedDesc, prometheus.CounterValue, float64(o.auth.Load()))
}
