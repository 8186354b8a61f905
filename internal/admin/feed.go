package admin

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/metrics"
)

// The dashboard's live feeds: JSON published by the broker, QoS 0, not
// retained, at most once per feed interval (1 s by default).
const (
	// FeedOverview carries an Overview every interval.
	FeedOverview = "$SYS/starling/dashboard/overview"
	// FeedClients carries a ClientsFeed every interval while someone
	// subscribes to the feeds (the overview reached a session).
	FeedClients = "$SYS/starling/dashboard/clients"
)

// Overview is the payload of FeedOverview.
type Overview struct {
	Time             int64   `json:"t"` // Unix milliseconds
	Version          string  `json:"version"`
	UptimeSeconds    int64   `json:"uptime_seconds"`
	ClientsConnected int64   `json:"clients_connected"`
	Sessions         int     `json:"sessions"`
	ConnectionsTotal uint64  `json:"connections_total"`
	MessagesIn       uint64  `json:"messages_received"`
	MessagesOut      uint64  `json:"messages_sent"`
	Dropped          uint64  `json:"messages_dropped"`
	InPerSecond      float64 `json:"messages_received_per_second"`
	OutPerSecond     float64 `json:"messages_sent_per_second"`
	DroppedPerSecond float64 `json:"messages_dropped_per_second"`
	BytesInPerSecond float64 `json:"bytes_received_per_second"`
	BytesOutPerSec   float64 `json:"bytes_sent_per_second"`
	Subscriptions    int     `json:"subscriptions"`
	Retained         int     `json:"retained"` // not counting the $SYS tree
	// Flow control: bytes queued for subscribers now, the broker-wide
	// bound (0: none), and publishers held back per second.
	QueuedBytes    int64   `json:"queued_bytes"`
	MaxQueuedBytes int64   `json:"max_queued_bytes"`
	HoldsPerSecond float64 `json:"holds_per_second"`
	SlowConsumers  uint64  `json:"slow_consumer_actions"`
	// Cluster is this node's view of its cluster; absent on a single node.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

// ClientsFeed is the payload of FeedClients: the connected clients (the
// first maxFeedClients by client ID) and the recent connects and
// disconnects, newest first.
type ClientsFeed struct {
	Time      int64        `json:"t"`
	Connected []FeedClient `json:"connected"`
	Truncated bool         `json:"truncated"`
	Events    []Event      `json:"events"`
}

// FeedClient is one connected client in ClientsFeed.
type FeedClient struct {
	ClientID        string  `json:"client_id"`
	Dashboard       bool    `json:"dashboard,omitempty"` // a dashboard's own connection
	Remote          string  `json:"remote,omitempty"`
	Username        string  `json:"username,omitempty"`
	ProtocolVersion byte    `json:"protocol_version"`
	Subscriptions   int     `json:"subscriptions"`
	Inflight        int     `json:"inflight"`
	Window          int     `json:"inflight_window"` // see Client
	Queued          int     `json:"queued"`
	KeepAlive       uint16  `json:"keep_alive"`
	TLS             bool    `json:"tls"`
	TLSVersion      string  `json:"tls_version,omitempty"`
	ClientCert      string  `json:"client_cert,omitempty"`
	Dropped         Dropped `json:"dropped"` // since the session began
	Flow            Flow    `json:"flow"`
}

// Event is a client's connect or disconnect.
type Event struct {
	Time     int64  `json:"t"`
	Event    string `json:"event"` // "connected" or "disconnected"
	ClientID string `json:"client_id"`
	Remote   string `json:"remote,omitempty"`
}

const (
	maxFeedClients = 200
	maxEvents      = 50
)

type feed struct {
	b       Broker
	src     metrics.Source
	version string
	start   time.Time

	mu        sync.Mutex
	prev      metrics.Counters
	prevAt    time.Time
	prevHolds uint64
	connected map[string]FeedClient // nil while nobody watches
	events    []Event               // newest first
	clientsAt time.Time             // last client list pushed

	topOn         bool                            // topic sampling running
	topAt         time.Time                       // last top reading
	prevTop       map[string]broker.ClientTraffic // client counters at topAt
	marks         map[string]clientMark           // per-client figures at the last tick; nil before the first
	prevDropTotal uint64
	alerts        []Alert // at most maxAlerts groups, the most recently raised first, kept while nobody watches
	cluster       func() *ClusterStatus
	refusals      func() []Refusal
	prevRefusals  map[string]uint64 // Refusal counts by kind at the last tick
	log           *eventLog         // refusals and denials, for FeedEvents
	alertOpts     AlertOptions
	alertsAt      time.Time     // last alert check
	refused       []refusedMark // refused logins counted over the last minute
	hook          *webhook      // nil without alerts.webhook_url
	iv            time.Duration // feed interval
	node          string

	owners          func() map[string]int // sessions owned per node; nil on a single node
	ownerCounts     map[string]int
	ownersAt        time.Time
	clusterEvents   []ClusterEvent  // newest first, at most maxClusterEvents
	clusterLive     map[string]bool // peers connected at the last tick
	clusterSeen     map[string]bool // peers ever connected
	clusterWasReady bool
	lastCluster     *ClusterStatus // of the last tick
}

func newFeed(b Broker, src metrics.Source, version string, start time.Time) *feed {
	return &feed{b: b, src: src, version: version, start: start, alertOpts: defaultAlerts, iv: time.Second}
}

func (f *feed) run(ctx context.Context, iv time.Duration, log *slog.Logger) {
	tk := time.NewTicker(iv)
	defer tk.Stop()
	// Connects and disconnects push the client list at once, at most
	// once per minClientsGap: later ones within the gap wait for its end.
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	defer gap.Stop()
	pending := false
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			err = f.tick(time.Now())
		case <-f.b.ClientChanges():
			if wait := minClientsGap - time.Since(f.lastClients()); wait > 0 {
				if !pending {
					pending = true
					gap.Reset(wait)
				}
				continue
			}
			err = f.clientsChanged(time.Now())
		case <-gap.C:
			pending = false
			err = f.clientsChanged(time.Now())
		}
		if err != nil {
			log.Warn("dashboard feed publish failed", "err", err)
		}
	}
}

func (f *feed) lastClients() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clientsAt
}

// clientsChanged pushes the client list after a connect or disconnect,
// if anybody receives it.
func (f *feed) clientsChanged(now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.b.Subscribed(FeedClients) {
		return nil
	}
	return f.publishClients(now)
}

// tick publishes the overview and, if it reached anyone, the clients feed.
func (f *feed) tick(now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.src.Counters()
	o := Overview{Time: now.UnixMilli(), Version: f.version, UptimeSeconds: int64(now.Sub(f.start) / time.Second),
		ClientsConnected: c.Connected, Sessions: c.Sessions, ConnectionsTotal: c.ConnectionsTotal,
		MessagesIn: c.MessagesIn, MessagesOut: c.MessagesOut, Dropped: c.Dropped,
		Subscriptions: c.Subscriptions, Retained: clientRetained(f.b, c.Retained)}
	if f.cluster != nil {
		o.Cluster = f.cluster()
		f.lastCluster = o.Cluster
		f.watchCluster(now, o.Cluster)
	}
	if dt := now.Sub(f.prevAt).Seconds(); !f.prevAt.IsZero() && dt > 0 {
		rate := func(a, b uint64) float64 { return float64(a-b) / dt }
		o.InPerSecond = rate(c.MessagesIn, f.prev.MessagesIn)
		o.OutPerSecond = rate(c.MessagesOut, f.prev.MessagesOut)
		o.DroppedPerSecond = rate(c.Dropped, f.prev.Dropped)
		if c.BytesIn >= f.prev.BytesIn && c.BytesOut >= f.prev.BytesOut {
			o.BytesInPerSecond, o.BytesOutPerSec = rate(c.BytesIn, f.prev.BytesIn), rate(c.BytesOut, f.prev.BytesOut)
		}
	}
	fo := f.b.FlowOverview()
	o.QueuedBytes, o.MaxQueuedBytes, o.SlowConsumers = fo.QueuedBytes, fo.MaxQueuedBytes, fo.SlowConsumers
	if dt := now.Sub(f.prevAt).Seconds(); !f.prevAt.IsZero() && dt > 0 {
		o.HoldsPerSecond = float64(fo.Holds-f.prevHolds) / dt
	}
	f.prevHolds = fo.Holds
	f.prev, f.prevAt = c, now
	body, _ := json.Marshal(o)
	n, err := f.b.Publish(FeedOverview, body, 0, false)
	if err != nil {
		return err
	}
	if n == 0 {
		// Nobody watches: skip the client list, and start afresh (without
		// reporting every client as new) when someone does.
		f.connected = nil
	} else if err := f.publishClients(now); err != nil {
		return err
	}
	return f.tickLive(now)
}

// clientRetained is the count of retained messages without the broker's
// own $SYS tree, as the retained browser (filter #) lists them. The $SYS
// tree is a few dozen topics: counting it each second is cheap.
func clientRetained(b Broker, total int) int {
	sys, err := b.RetainedMatching("$SYS/#", 0)
	if err != nil {
		return total
	}
	return max(0, total-len(sys))
}

func (f *feed) publishClients(now time.Time) error {
	ms := now.UnixMilli()
	first := f.connected == nil
	cur := make(map[string]FeedClient)
	feed := ClientsFeed{Time: ms, Connected: []FeedClient{}}
	for _, s := range f.b.Clients() { // sorted by client ID
		if !s.Connected {
			continue
		}
		fc := FeedClient{ClientID: s.ClientID, Dashboard: isDashboard(s.ClientID), Remote: s.Remote, Username: s.Username, ProtocolVersion: s.Version,
			Subscriptions: len(s.Subscriptions), Inflight: s.Inflight, Window: s.Window, Queued: s.Queued, KeepAlive: s.KeepAlive,
			TLS: s.TLS, TLSVersion: s.TLSVersion, ClientCert: s.ClientCert, Dropped: droppedOf(s), Flow: flowOf(s.Flow)}
		cur[s.ClientID] = fc
		if len(feed.Connected) < maxFeedClients {
			feed.Connected = append(feed.Connected, fc)
		} else {
			feed.Truncated = true
		}
	}
	if !first {
		var evs []Event
		for id, fc := range f.connected {
			if _, ok := cur[id]; !ok {
				evs = append(evs, Event{Time: ms, Event: "disconnected", ClientID: id, Remote: fc.Remote})
			}
		}
		for id, fc := range cur {
			if old, ok := f.connected[id]; !ok || old.Remote != fc.Remote {
				evs = append(evs, Event{Time: ms, Event: "connected", ClientID: id, Remote: fc.Remote})
			}
		}
		f.events = append(evs, f.events...)
		if len(f.events) > maxEvents {
			f.events = f.events[:maxEvents]
		}
	}
	f.connected, f.clientsAt = cur, now
	feed.Events = append([]Event{}, f.events...)
	body, _ := json.Marshal(feed)
	_, err := f.b.Publish(FeedClients, body, 0, false)
	return err
}
