package metrics

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
)

// Publisher publishes a message from the broker itself; *broker.Broker
// implements it.
type Publisher interface {
	Publish(topic string, payload []byte, qos byte, retain bool) (int, error)
}

// SysOptions configures the $SYS publisher.
type SysOptions struct {
	// Interval between two updates of the tree. Default 10 s (Mosquitto's
	// sys_interval default); values under 1 s are raised to 1 s.
	Interval time.Duration
	// Version is published at $SYS/broker/version as "starling <Version>".
	Version string
	// Start is when the broker started, for $SYS/broker/uptime. Default:
	// when NewSys is called.
	Start time.Time
	// Logger gets publish failures. Default: discard.
	Logger *slog.Logger
}

// Sys publishes the $SYS/broker/... tree with Mosquitto's topic names, as
// retained QoS 0 messages, each only when its value changed since the last
// update (uptime changes every time).
//
// Topics (values are decimal text, as Mosquitto's):
//
//	$SYS/broker/version                          "starling <version>"
//	$SYS/broker/uptime                           "<n> seconds"
//	$SYS/broker/clients/connected                clients connected now
//	$SYS/broker/clients/disconnected             sessions kept for disconnected clients
//	$SYS/broker/clients/total                    sessions, connected or not
//	$SYS/broker/messages/received, sent          PUBLISH packets (Mosquitto counts every packet type)
//	$SYS/broker/publish/messages/received, sent  PUBLISH packets
//	$SYS/broker/publish/messages/dropped         deliveries dropped
//	$SYS/broker/bytes/received, sent             only when the broker counts bytes
//	$SYS/broker/subscriptions/count
//	$SYS/broker/retained messages/count
//	$SYS/broker/load/messages/received/1min, 5min, 15min (and sent)
//	$SYS/broker/load/publish/received/..., load/publish/sent/...
//	$SYS/broker/load/connections/...
//	$SYS/broker/load/bytes/received/..., sent/...  only when the broker counts bytes
//
// The load values are Mosquitto's: a rate per minute, as an exponentially
// weighted moving average over 1, 5 and 15 minutes, with two decimals.
type Sys struct {
	src  Source
	pub  Publisher
	opts SysOptions

	mu     sync.Mutex
	last   map[string]string // topic -> last published payload
	prev   Counters
	prevAt time.Time
	loads  map[string]*ewma
}

// NewSys builds a $SYS publisher reading src and publishing through pub.
func NewSys(src Source, pub Publisher, o SysOptions) *Sys {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	o.Interval = max(o.Interval, time.Second)
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sys{src: src, pub: pub, opts: o, last: make(map[string]string), loads: make(map[string]*ewma)}
}

// Run updates the tree at once and then every Interval until ctx ends.
func (s *Sys) Run(ctx context.Context) {
	tk := time.NewTicker(s.opts.Interval)
	defer tk.Stop()
	for {
		if err := s.Update(time.Now()); err != nil {
			s.opts.Logger.Warn("$SYS publish failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// Update reads the counters and publishes what changed; now is the time of
// the reading. It returns the first publish error.
func (s *Sys) Update(now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.src.Counters()
	u := func(x uint64) string { return strconv.FormatUint(x, 10) }
	i := func(x int) string { return strconv.Itoa(x) }
	vals := [][2]string{
		{"version", "starling " + s.opts.Version},
		{"uptime", strconv.FormatInt(int64(now.Sub(s.opts.Start)/time.Second), 10) + " seconds"},
		{"clients/connected", strconv.FormatInt(c.Connected, 10)},
		{"clients/disconnected", i(max(c.Sessions-int(c.Connected), 0))},
		{"clients/total", i(c.Sessions)},
		{"messages/received", u(c.MessagesIn)},
		{"messages/sent", u(c.MessagesOut)},
		{"publish/messages/received", u(c.MessagesIn)},
		{"publish/messages/sent", u(c.MessagesOut)},
		{"publish/messages/dropped", u(c.Dropped)},
		{"subscriptions/count", i(c.Subscriptions)},
		{"retained messages/count", i(c.Retained)},
	}
	if c.HasBytes {
		vals = append(vals, [2]string{"bytes/received", u(c.BytesIn)}, [2]string{"bytes/sent", u(c.BytesOut)})
	}
	if !s.prevAt.IsZero() {
		if dt := now.Sub(s.prevAt).Seconds(); dt > 0 {
			rates := [][2]any{
				{"messages/received", c.MessagesIn - s.prev.MessagesIn},
				{"messages/sent", c.MessagesOut - s.prev.MessagesOut},
				{"publish/received", c.MessagesIn - s.prev.MessagesIn},
				{"publish/sent", c.MessagesOut - s.prev.MessagesOut},
				{"connections", c.ConnectionsTotal - s.prev.ConnectionsTotal},
			}
			if c.HasBytes {
				rates = append(rates, [2]any{"bytes/received", c.BytesIn - s.prev.BytesIn}, [2]any{"bytes/sent", c.BytesOut - s.prev.BytesOut})
			}
			for _, r := range rates {
				name := r[0].(string)
				l := s.loads[name]
				if l == nil {
					l = new(ewma)
					s.loads[name] = l
				}
				l.update(float64(r[1].(uint64))*60/dt, dt)
				for k, w := range loadWindows {
					vals = append(vals, [2]string{"load/" + name + "/" + w.name, strconv.FormatFloat(l.v[k], 'f', 2, 64)})
				}
			}
		}
	}
	s.prev, s.prevAt = c, now
	var first error
	for _, kv := range vals {
		t := "$SYS/broker/" + kv[0]
		if s.last[t] == kv[1] {
			continue
		}
		if _, err := s.pub.Publish(t, []byte(kv[1]), 0, true); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		s.last[t] = kv[1]
	}
	return first
}

var loadWindows = [3]struct {
	name string
	secs float64
}{{"1min", 60}, {"5min", 300}, {"15min", 900}}

// ewma is Mosquitto's load average: each update moves the average towards
// the rate measured since the last update by 1-exp(-dt/window).
type ewma struct{ v [3]float64 }

func (e *ewma) update(rate, dt float64) {
	for k, w := range loadWindows {
		f := math.Exp(-dt / w.secs)
		e.v[k] = f*e.v[k] + (1-f)*rate
	}
}
