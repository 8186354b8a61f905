package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// AlertOptions are the thresholds of the alerts and their webhook (the
// config file's alerts: section).
type AlertOptions struct {
	// QueueFraction: a slow-consumer alert for a connected client whose
	// queue holds this fraction of max_queued_messages (0: off).
	QueueFraction float64
	// DroppedPerSecond: a dropped alert above this many drops per second
	// (0: any drop).
	DroppedPerSecond float64
	// MaxConnections: a connections alert above this many clients (0: off).
	MaxConnections int
	// RefusedPerMinute: a refused_logins alert above this many refused
	// CONNECTs over the last minute (0: off).
	RefusedPerMinute int
	// WebhookURL receives each new alert as a JSON POST ("": none).
	WebhookURL string
	// WebhookTimeout bounds each request; default 5 s.
	WebhookTimeout time.Duration
}

// defaultAlerts is what a zero Options gets: the thresholds the config's
// defaults give.
var defaultAlerts = AlertOptions{QueueFraction: 0.5, WebhookTimeout: 5 * time.Second}

const (
	// reopenAfter: an acknowledged alert raised again after this many
	// intervals without being raised is new again (the condition had
	// stopped and came back).
	reopenAfter = 3
	// maxWebhookQueue bounds the alerts waiting for the webhook.
	maxWebhookQueue = 64
)

// WebhookPayload is the body of a webhook request.
type WebhookPayload struct {
	Alert   Alert  `json:"alert"`
	Version string `json:"version"`
	Node    string `json:"node,omitempty"`
}

// webhook posts alerts to a URL, one request at a time from a bounded
// queue, so a slow receiver costs the broker nothing but dropped posts.
type webhook struct {
	url     string
	client  *http.Client
	queue   chan WebhookPayload
	log     *slog.Logger
	dropped int
}

func newWebhook(o AlertOptions, log *slog.Logger) *webhook {
	if o.WebhookURL == "" {
		return nil
	}
	return &webhook{url: o.WebhookURL, client: &http.Client{Timeout: o.WebhookTimeout}, queue: make(chan WebhookPayload, maxWebhookQueue), log: log}
}

// send queues p; it never blocks. The caller holds the feed's lock.
func (w *webhook) send(p WebhookPayload) {
	if w == nil {
		return
	}
	select {
	case w.queue <- p:
	default:
		w.dropped++
		w.log.Warn("alert webhook queue full: alert not sent", "kind", p.Alert.Kind, "client_id", p.Alert.ClientID, "dropped", w.dropped)
	}
}

// run posts the queued alerts until ctx ends.
func (w *webhook) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-w.queue:
			if err := w.post(ctx, p); err != nil {
				w.log.Warn("alert webhook failed", "kind", p.Alert.Kind, "client_id", p.Alert.ClientID, "err", err)
			}
		}
	}
}

func (w *webhook) post(ctx context.Context, p WebhookPayload) error {
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("alert webhook: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("alert webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "starling-alerts")
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("alert webhook: post %s: %w", w.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("alert webhook: post %s: status %s", w.url, resp.Status)
	}
	return nil
}

// refusedLastMinute notes the refused logins counted so far at now and
// returns how many came in the last minute (ticks are at least 1 s apart:
// at most 61 readings are kept).
func (f *feed) refusedLastMinute(now time.Time) uint64 {
	if f.log == nil {
		return 0
	}
	_, totals, _ := f.log.list("", 0)
	total := totals["connect_refused"]
	f.refused = append(f.refused, refusedMark{at: now, total: total})
	i := 0
	for i < len(f.refused)-1 && now.Sub(f.refused[i+1].at) >= time.Minute {
		i++
	}
	f.refused = f.refused[i:]
	return total - f.refused[0].total
}

type refusedMark struct {
	at    time.Time
	total uint64
}

// AckRequest is the body of POST /api/v1/alerts/ack: one alert by client
// and kind, or all of them when both are empty.
type AckRequest struct {
	ClientID string `json:"client_id"`
	Kind     string `json:"kind"`
}

// ack marks alerts acknowledged; it returns how many it changed.
func (f *feed) ack(r AckRequest, now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for i := range f.alerts {
		a := &f.alerts[i]
		if a.Acked || r.Kind != "" && (a.Kind != r.Kind || a.ClientID != r.ClientID) {
			continue
		}
		a.Acked, a.AckedAt = true, now.UnixMilli()
		n++
	}
	return n
}

// getAlerts: GET /api/v1/alerts
func (a *Admin) getAlerts(w http.ResponseWriter, r *http.Request) {
	a.feed.mu.Lock()
	out := AlertsFeed{Time: time.Now().UnixMilli(), Alerts: append([]Alert{}, a.feed.alerts...)}
	a.feed.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// ackAlerts: POST /api/v1/alerts/ack
func (a *Admin) ackAlerts(w http.ResponseWriter, r *http.Request) {
	var req AckRequest
	if !decodeJSON(w, r, 4096, &req, true) {
		return
	}
	if req.ClientID != "" && req.Kind == "" {
		writeError(w, http.StatusBadRequest, "kind: set it with client_id (or neither, for all)")
		return
	}
	n := a.feed.ack(req, time.Now())
	a.log.Info("alerts acknowledged by admin", "kind", req.Kind, "client_id", req.ClientID, "count", n, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"acknowledged": n})
}
