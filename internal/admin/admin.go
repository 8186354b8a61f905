// Package admin is the broker's HTTP side for operators: Prometheus
// /metrics, /healthz and /readyz, the JSON management API under /api/v1
// (api.go), the embedded dashboard at / and the live feeds it subscribes to
// over MQTT (feed.go). docs/observability.md is the user documentation.
package admin

import (
	"context"
	"iter"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/metrics"
	"github.com/starling-mqtt/starling/web/dashboard"
)

// Checker verifies admin credentials (the security package's password
// file). It must be safe for concurrent use and bound its own CPU use.
type Checker interface {
	CheckAdmin(user, pass string) bool
}

// Broker is what the admin side needs of the broker; *broker.Broker
// implements it.
type Broker interface {
	Clients() []broker.ClientSummary
	Client(id string) (broker.ClientSummary, bool)
	Kick(id string) bool
	ClientsPage(match func(id, user, remote string) bool, connected *bool, offset, limit int) ([]broker.ClientSummary, int)
	DeleteSession(id string) bool
	RetainedMatching(filter string, limit int) ([]broker.RetainedMessage, error)
	Publish(topic string, payload []byte, qos byte, retain bool) (int, error)
	PublishMessage(m broker.Message) (int, error)
	Receivers(topic string) ([]broker.Receiver, error)
	SubscriptionCount(topic, except string) int
	Subscribed(topic string) bool
	ClientChanges() <-chan struct{}
	Traffics() []broker.ClientTraffic
	AllTraffic() iter.Seq[broker.ClientTraffic]
	SampleTopics(limit int) ([]broker.TopicTraffic, broker.TopicTraffic)
	StopTopicSampling()
	QueueLimits() (maxQueued, maxInflight int)
	FlowOverview() broker.FlowOverview
	SetTrace(t *broker.Trace)
	CurrentTrace() *broker.Trace
}

// Options configures New. The zero value serves metrics, health and the
// dashboard, with the management API disabled.
type Options struct {
	// Checker checks the HTTP Basic credentials of /api/v1 requests. Nil
	// disables the API: it answers 403 "admin API disabled: configure admin
	// credentials". /metrics, /healthz, /readyz and the dashboard's static
	// files stay open (the dashboard logs in over MQTT, where the broker's
	// authenticator and ACLs apply).
	Checker Checker
	// Ready reports whether the broker serves (listeners open, store loaded,
	// not shutting down); /readyz answers 503 while it returns false. Nil
	// means always ready.
	Ready func() bool
	// Version is shown in $SYS/broker/version and the dashboard.
	Version string
	// SysInterval is the period of the $SYS/broker tree. Default 10 s;
	// at least 1 s; negative turns the tree off.
	SysInterval time.Duration
	// FeedInterval is the period of the dashboard feeds under
	// $SYS/starling/dashboard/. Default 1 s; at least 1 s; negative turns
	// the feeds off (the dashboard then shows no figures).
	FeedInterval time.Duration
	// MaxBodyBytes bounds a request body of the management API (publish).
	// Default 1 MiB.
	MaxBodyBytes int64
	// Logger; default: discard.
	Logger *slog.Logger
	// LogLevel is the level variable of Logger's handler; with it,
	// PUT /api/v1/log-level changes the level at runtime. Nil: the
	// endpoint answers 501.
	LogLevel *slog.LevelVar
	// Metrics, if set, is the registry /metrics serves; default: a new one
	// reading the broker (metrics.New(metrics.FromBroker(b))).
	Metrics *metrics.Metrics
	// Node, when set, labels every metric node="..." (cluster members).
	Node string
	// Alerts sets the alerts' thresholds and webhook; nil: the defaults
	// (queue half full, any drop, no connection or refusal threshold, no
	// webhook).
	Alerts *AlertOptions
	// Clock, if set, is the history's clock (tests); default time.Now.
	Clock func() time.Time
	// ClusterOwners counts the sessions each cluster node owns, by node
	// name, for the dashboard's cluster view; nil: unknown.
	ClusterOwners func() map[string]int
	// Cluster reports the cluster this node belongs to, for
	// GET /api/v1/cluster and the dashboard; nil for a single node.
	Cluster func() *ClusterStatus
	// Bridges reports the bridges to other brokers, for
	// GET /api/v1/bridges; nil when none is configured.
	Bridges func() any
	// Refusals, when set, reports refused connections (WebSocket
	// upgrades, logins) as running counts by kind; each tick at which a
	// count grew raises an alert of that kind.
	Refusals func() []Refusal
}

// Refusal is a running count of one kind of refused connection, for the
// dashboard's alerts.
type Refusal struct {
	Kind   string // the alert's kind: "ws_refused", "auth_refused"
	Count  uint64 // since start
	Detail string // the latest refusal, and counts by reason
}

// ClusterStatus is a cluster member's view of its cluster.
type ClusterStatus struct {
	Name  string   `json:"name"`
	Node  string   `json:"node"`  // this node
	Ready bool     `json:"ready"` // replicated state available (a majority connected)
	Peers []string `json:"peers"` // other nodes connected now
	Down  []string `json:"down"`  // configured nodes not connected: names, or addresses if never seen
	// Expected is the number of nodes configured (this one and its
	// peers); fewer connected means some are down or unreachable.
	Expected int `json:"expected_nodes"`
}

// Admin is the operator side of one broker.
type Admin struct {
	b    Broker
	src  metrics.Source
	m    *metrics.Metrics
	sys  *metrics.Sys
	feed *feed
	hist *history
	// events is the history of refusals and denials (RecordEvent).
	events *eventLog
	opts   Options
	start  time.Time
	log    *slog.Logger

	once sync.Once
	h    http.Handler
}

// New builds the admin side of b. Nothing runs until Handler is served and
// Run is called.
func New(b *broker.Broker, o Options) *Admin {
	a := newAdmin(b, metrics.FromBroker(b), o)
	b.SetEvents(a.RecordEvent)
	return a
}

func newAdmin(b Broker, src metrics.Source, o Options) *Admin {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewWithLabels(src, o.Node)
	}
	start := time.Now()
	a := &Admin{b: b, src: src, m: o.Metrics, opts: o, start: start, log: o.Logger}
	a.sys = metrics.NewSys(src, b, metrics.SysOptions{Interval: o.SysInterval, Version: o.Version, Start: start, Logger: o.Logger})
	a.feed = newFeed(b, src, o.Version, start)
	a.feed.cluster = o.Cluster
	a.feed.refusals = o.Refusals
	a.feed.node = o.Node
	a.feed.owners = o.ClusterOwners
	if o.Alerts != nil {
		a.feed.alertOpts = *o.Alerts
		if a.feed.alertOpts.WebhookTimeout <= 0 {
			a.feed.alertOpts.WebhookTimeout = defaultAlerts.WebhookTimeout
		}
	}
	a.feed.hook = newWebhook(a.feed.alertOpts, o.Logger)
	a.hist = newHistory(src, o.Clock)
	a.events = &eventLog{}
	a.feed.log = a.events
	return a
}

// Metrics returns the registry served at /metrics, for other subsystems to
// register collectors on.
func (a *Admin) Metrics() *metrics.Metrics { return a.m }

// Run publishes the $SYS/broker tree every SysInterval and the dashboard
// feeds every FeedInterval until ctx ends.
// Start it once the broker serves (its store loaded: the $SYS messages are
// retained), and end ctx before closing the broker.
func (a *Admin) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.hist.run(ctx) }()
	if a.feed.hook != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.feed.hook.run(ctx) }()
	}
	if a.opts.SysInterval >= 0 {
		wg.Add(1)
		go func() { defer wg.Done(); a.sys.Run(ctx) }()
	}
	if iv := a.opts.FeedInterval; iv >= 0 {
		if iv == 0 {
			iv = time.Second
		}
		a.feed.mu.Lock()
		a.feed.iv = max(iv, time.Second)
		a.feed.mu.Unlock()
		wg.Add(1)
		go func() { defer wg.Done(); a.feed.run(ctx, max(iv, time.Second), a.log) }()
	}
	wg.Wait()
}

// Handler serves /metrics, /healthz, /readyz, /api/v1/ and the dashboard
// at /. Mount it at "/" beside the WebSocket path (/mqtt): the more specific
// pattern wins.
func (a *Admin) Handler() http.Handler {
	a.once.Do(func() {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", a.m.Handler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte("ok\n"))
		})
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if a.opts.Ready != nil && !a.opts.Ready() {
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte("not ready\n"))
				return
			}
			w.Write([]byte("ready\n"))
		})
		mux.Handle("/api/v1/", a.protect(a.api()))
		files := secureHeaders(http.FileServerFS(dashboard.Files))
		// Browsers ask for /favicon.ico when a page names no icon (and
		// some anyway): the dashboard's icon is an SVG.
		mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/favicon.svg", http.StatusMovedPermanently)
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", "GET, HEAD")
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			files.ServeHTTP(w, r)
		})
		a.h = mux
	})
	return a.h
}

// secureHeaders keeps the dashboard to its own origin: scripts, styles and
// connections (the MQTT WebSocket) only from where the page came from.
// MQTT.js runs its keep-alive timer in a worker it builds from a blob: URL
// (a timer in a worker is not throttled in a background tab), so workers
// may come from blob: too; only the page's own scripts can make one.
func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}
