package bridge

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
)

// Set is the bridges of one broker.
type Set struct {
	bridges []*Bridge
	b       *broker.Broker
	log     *slog.Logger
	stop    context.CancelFunc
	done    chan struct{}
	changed chan struct{} // a bridge connected or disconnected: $SYS now
}

// NewSet builds the configured bridges; it must run before the broker
// restores its sessions (the bridges' queue bounds apply from there).
func NewSet(cfgs []config.Bridge, b *broker.Broker, log *slog.Logger) *Set {
	s := &Set{b: b, log: log, changed: make(chan struct{}, 1)}
	for _, c := range cfgs {
		br := New(c, b, log)
		br.onChange = func() {
			select {
			case s.changed <- struct{}{}:
			default:
			}
		}
		s.bridges = append(s.bridges, br)
	}
	return s
}

// Start starts every bridge and their $SYS topics, published every
// sysInterval (none when <= 0).
func (s *Set) Start(sysInterval time.Duration) error {
	s.dropStale()
	var errs []error
	for _, br := range s.bridges {
		if err := br.Start(); err != nil {
			errs = append(errs, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan struct{})
	go s.sys(ctx, sysInterval)
	// The local sides connect to the broker in memory, at once; wait a
	// little for their subscriptions so that the first messages published
	// after start are forwarded.
	wait, cancelWait := context.WithTimeout(ctx, 10*time.Second)
	defer cancelWait()
	for _, br := range s.bridges {
		if br.cancel == nil {
			continue // did not start
		}
		br.mu.Lock()
		up := br.localUp
		br.mu.Unlock()
		select {
		case <-up:
		case <-wait.Done():
			br.log.Warn("bridge local session not subscribed yet; starting anyway")
		}
	}
	return errors.Join(errs...)
}

// Close stops every bridge.
func (s *Set) Close() {
	if s.stop != nil {
		s.stop()
		<-s.done
	}
	for _, br := range s.bridges {
		br.Close()
	}
}

// Status returns every bridge's state, in configuration order.
func (s *Set) Status() []Status {
	out := make([]Status, 0, len(s.bridges))
	for _, br := range s.bridges {
		out = append(out, br.Status())
	}
	return out
}

// sys publishes $SYS/broker/bridges/<name>/... (retained, QoS 0) every
// interval and when a bridge connects or disconnects.
func (s *Set) sys(ctx context.Context, every time.Duration) {
	defer close(s.done)
	if every <= 0 || len(s.bridges) == 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, st := range s.Status() {
			p := "$SYS/broker/bridges/" + st.Name + "/"
			for _, kv := range [][2]string{
				{"connected", strconv.FormatBool(st.Connected)},
				{"queued", strconv.Itoa(st.Queued)},
				{"sent", strconv.FormatUint(st.Sent, 10)},
				{"received", strconv.FormatUint(st.Received, 10)},
				{"dropped", strconv.FormatUint(st.Dropped, 10)},
				{"last_error", st.LastError},
			} {
				_, _ = s.b.Publish(p+kv[0], []byte(kv[1]), 0, true)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.changed:
		}
	}
}

// Collector returns the bridges' metrics, mqtt_bridge_*, labelled by
// bridge name (configured, so bounded).
func (s *Set) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Set }

var (
	descConnected = prometheus.NewDesc("mqtt_bridge_connected", "1 while the bridge's remote link is up.", []string{"bridge"}, nil)
	descQueued    = prometheus.NewDesc("mqtt_bridge_queued_messages", "QoS 1/2 messages waiting to go out over the bridge, in flight included.", []string{"bridge"}, nil)
	descSent      = prometheus.NewDesc("mqtt_bridge_sent_messages_total", "Messages forwarded to the remote and acknowledged there.", []string{"bridge"}, nil)
	descReceived  = prometheus.NewDesc("mqtt_bridge_received_messages_total", "Messages from the remote routed here.", []string{"bridge"}, nil)
	descDropped   = prometheus.NewDesc("mqtt_bridge_dropped_messages_total", "Messages the bridge lost: queue bounds, refusals, QoS 0 on a slow link.", []string{"bridge"}, nil)
	descConnects  = prometheus.NewDesc("mqtt_bridge_connects_total", "Successful connections to the remote.", []string{"bridge"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descQueued, descSent, descReceived, descDropped, descConnects} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.Status() {
		up := 0.0
		if st.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, up, st.Name)
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(st.Queued), st.Name)
		ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(st.Sent), st.Name)
		ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(st.Received), st.Name)
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped), st.Name)
		ch <- prometheus.MustNewConstMetric(descConnects, prometheus.CounterValue, float64(st.Connects), st.Name)
	}
}

// dropStale ends the sessions of bridges no longer configured: their
// subscriptions would go on queueing messages nobody forwards.
func (s *Set) dropStale() {
	configured := map[string]bool{}
	for _, br := range s.bridges {
		configured[br.localID] = true
	}
	for _, id := range s.b.SessionIDs() {
		if strings.HasPrefix(id, LocalClientID("")) && !configured[id] {
			s.b.DropSession(id)
			s.log.Warn("bridge no longer configured: its session and queue are dropped", "client_id", id)
		}
	}
}
