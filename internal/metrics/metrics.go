// Package metrics exposes a broker's counters: a Prometheus registry per
// broker (no global registry) whose collector reads the counters on each
// scrape, and the $SYS topic tree with Mosquitto's names (sys.go).
//
// Metric names follow mqtt_<subsystem>_<name>_<unit>, with _total on
// counters and never a client ID or topic as a label.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/starling-mqtt/starling/internal/broker"
)

// Counters is one reading of a broker's counters and sizes.
type Counters struct {
	Connected        int64  // clients connected now
	ConnectionsTotal uint64 // accepted CONNECTs since start
	MessagesIn       uint64 // PUBLISH packets received
	MessagesOut      uint64 // PUBLISH packets handed to connections
	Dropped          uint64 // deliveries dropped (queue full, expired, too large, slow reader)
	StoreErrors      uint64 // failed store commits
	Refused          uint64 // connections refused by per-address limits
	// ConnectedByProtocol counts connected clients by protocol version.
	ConnectedByProtocol map[string]int64
	Sessions            int // sessions, connected or not
	Subscriptions       int
	Retained            int // retained messages

	// HasBytes tells whether the broker counts bytes; BytesIn and BytesOut
	// are zero when it does not.
	HasBytes bool
	BytesIn  uint64 // bytes read from clients
	BytesOut uint64 // bytes written to clients
}

// Source reads a broker's counters; it is called on every scrape and every
// $SYS or dashboard tick, so it must be cheap and safe for concurrent use.
type Source interface {
	Counters() Counters
}

// ByteCounter is implemented by a broker that counts the bytes it reads
// and writes on client connections. *broker.Broker does not yet; when it
// does, FromBroker picks it up and the byte metrics and $SYS topics appear.
type ByteCounter interface {
	BytesReceived() uint64
	BytesSent() uint64
}

// FromBroker adapts a *broker.Broker to Source.
func FromBroker(b *broker.Broker) Source { return brokerSource{b} }

type brokerSource struct{ b *broker.Broker }

// Details is the part of a reading only scrapes need: its labelled series
// and the queue totals, which cost a walk over the sessions.
type Details struct {
	InByQoS, OutByQoS [3]QoSCount
	DroppedByReason   map[string]uint64
	AuthFailures      map[string]uint64
	Denied            map[string]uint64 // by action: publish, subscribe
	LimitsExceeded    map[string]uint64 // by limit (config key)
	Listeners         []ListenerCount
	Inflight, Queued  int
	CommitSynced      HistogramReading
	CommitUnsynced    HistogramReading
	Flow              FlowReading
}

// FlowReading is what flow control did (docs/flow-control.md).
type FlowReading struct {
	Holds, Stalls, GlobalWaits, Conflated uint64
	HeldSeconds                           float64
	SlowConsumer                          map[string]uint64 // policy actions: disconnect, drop
	QueuedBytes                           int64
}

// QoSCount is PUBLISH packets and their payload bytes.
type QoSCount struct{ Messages, Bytes uint64 }

// ListenerCount is one listener's network connections.
type ListenerCount struct {
	Name  string
	Open  int64
	Total uint64
}

// HistogramReading is a cumulative histogram.
type HistogramReading struct {
	Buckets map[float64]uint64
	Count   uint64
	Sum     float64
}

// Detailer is a Source that also offers Details.
type Detailer interface {
	Details() Details
}

func (s brokerSource) Details() Details {
	tr := &s.b.Traffic
	d := Details{
		DroppedByReason: map[string]uint64{
			"queue_full":      tr.DroppedQueueFull.Load(),
			"expired":         tr.DroppedExpired.Load(),
			"too_large":       tr.DroppedTooLarge.Load(),
			"no_share_member": tr.DroppedNoMember.Load(),
			"slow_reader":     s.b.DroppedSlowReader(),
			"slow_consumer":   s.b.Flow.DroppedPolicy.Load(),
			"overflow":        s.b.Flow.Overflow.Load(),
		},
		AuthFailures:   make(map[string]uint64, len(broker.AuthFailureReasons)),
		Denied:         map[string]uint64{"publish": tr.DeniedPublish.Load(), "subscribe": tr.DeniedSubscribe.Load()},
		LimitsExceeded: make(map[string]uint64, len(broker.LimitNames)),
	}
	for i, l := range broker.LimitNames {
		d.LimitsExceeded[l] = tr.LimitsExceeded[i].Load()
	}
	for q := range 3 {
		d.InByQoS[q] = QoSCount{tr.In[q].Messages.Load(), tr.In[q].Bytes.Load()}
		d.OutByQoS[q] = QoSCount{tr.Out[q].Messages.Load(), tr.Out[q].Bytes.Load()}
	}
	for i, r := range broker.AuthFailureReasons {
		d.AuthFailures[r] = tr.AuthFailures[i].Load()
	}
	for _, ls := range s.b.Listeners() {
		d.Listeners = append(d.Listeners, ListenerCount{Name: ls.Name, Open: ls.Open.Load(), Total: ls.Total.Load()})
	}
	d.Inflight, d.Queued = s.b.QueueTotals()
	fl := &s.b.Flow
	d.Flow = FlowReading{Holds: fl.Holds.Load(), Stalls: fl.Stalls.Load(), GlobalWaits: fl.GlobalWaits.Load(),
		Conflated: fl.Conflated.Load() + s.b.ConflatedQoS0(), HeldSeconds: float64(fl.HeldNanos.Load()) / 1e9,
		SlowConsumer: map[string]uint64{"disconnect": fl.SlowDisconnect.Load(), "drop": fl.SlowShed.Load()},
		QueuedBytes:  s.b.QueuedBytes()}
	hr := func(h *broker.Histogram) HistogramReading {
		b, c, sum := h.Snapshot()
		return HistogramReading{Buckets: b, Count: c, Sum: sum}
	}
	d.CommitSynced, d.CommitUnsynced = hr(&tr.CommitSynced), hr(&tr.CommitUnsynced)
	return d
}

func (s brokerSource) Counters() Counters {
	st := &s.b.Stats
	c := Counters{
		Connected:        st.Connections.Load(),
		ConnectionsTotal: st.ConnectionsTotal.Load(),
		MessagesIn:       st.MessagesIn.Load(),
		MessagesOut:      st.MessagesOut.Load(),
		Dropped:          st.Dropped.Load() + s.b.DroppedSlowReader(),
		StoreErrors:      st.StoreErrors.Load(),
		Refused:          st.Refused.Load(),
		ConnectedByProtocol: map[string]int64{
			"3.1":   st.ConnectedByVersion[3].Load(),
			"3.1.1": st.ConnectedByVersion[4].Load(),
			"5.0":   st.ConnectedByVersion[5].Load(),
		},
		Sessions:      s.b.Sessions(),
		Subscriptions: s.b.Subscriptions(),
		Retained:      s.b.Retained(),
	}
	if bc, ok := any(s.b).(ByteCounter); ok {
		c.HasBytes, c.BytesIn, c.BytesOut = true, bc.BytesReceived(), bc.BytesSent()
	}
	return c
}

// Metrics is one broker's Prometheus registry.
type Metrics struct {
	reg *prometheus.Registry
}

// New builds a registry holding the broker collector for src, the Go
// runtime collector and the process collector.
func New(src Source) *Metrics { return NewWithLabels(src, "") }

// NewWithLabels is New with every metric labelled node="node", for a
// member of a cluster ("" adds no label).
func NewWithLabels(src Source, node string) *Metrics {
	reg := prometheus.NewRegistry()
	var r prometheus.Registerer = reg
	if node != "" {
		r = prometheus.WrapRegistererWith(prometheus.Labels{"node": node}, reg)
	}
	r.MustRegister(
		newCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Metrics{reg: reg}
}

// Registry returns the registry, for other subsystems (store, auth) to
// register their own collectors on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, MaxRequestsInFlight: 4})
}

// collector turns a Counters reading into metrics at scrape time.
type collector struct {
	src Source

	connected, connections, msgIn, msgOut, dropped, storeErrors,
	sessions, subscriptions, retained, bytesIn, bytesOut, refused, byProtocol *prometheus.Desc

	pubIn, pubInBytes, pubOut, pubOutBytes, droppedBy, authFail, denied, limits, lisOpen, lisTotal,
	inflight, queued, commit *prometheus.Desc

	holds, heldSeconds, stalls, globalWaits, conflated, slowConsumer, queuedBytes *prometheus.Desc
}

func newCollector(src Source) *collector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &collector{
		src:           src,
		connected:     d("mqtt_clients_connected", "Clients connected now."),
		connections:   d("mqtt_clients_connections_total", "CONNECTs accepted since the broker started."),
		msgIn:         d("mqtt_messages_received_total", "PUBLISH packets received from clients."),
		msgOut:        d("mqtt_messages_sent_total", "PUBLISH packets handed to client connections."),
		dropped:       d("mqtt_messages_dropped_total", "Deliveries dropped: queue full, expired, too large for the client, or slow reader."),
		storeErrors:   d("mqtt_store_commit_errors_total", "Store commits that failed."),
		sessions:      d("mqtt_sessions_current", "Sessions held by the broker, connected or not."),
		subscriptions: d("mqtt_subscriptions_current", "Subscriptions of all sessions."),
		retained:      d("mqtt_retained_messages", "Retained messages held by the broker."),
		bytesIn:       d("mqtt_network_received_bytes_total", "Bytes read from client connections."),
		bytesOut:      d("mqtt_network_sent_bytes_total", "Bytes written to client connections."),
		refused:       d("mqtt_clients_refused_total", "Connections closed by the per-address limits before CONNECT."),
		byProtocol: prometheus.NewDesc("mqtt_clients_connected_by_protocol", "Clients connected now, by MQTT protocol version.",
			[]string{"protocol"}, nil),
		pubIn: prometheus.NewDesc("mqtt_publish_received_total", "PUBLISH packets received from clients, by QoS.",
			[]string{"qos"}, nil),
		pubInBytes: prometheus.NewDesc("mqtt_publish_received_bytes_total", "Payload bytes of the PUBLISH packets received from clients, by QoS.",
			[]string{"qos"}, nil),
		pubOut: prometheus.NewDesc("mqtt_publish_sent_total", "PUBLISH packets handed to client connections, by QoS.",
			[]string{"qos"}, nil),
		pubOutBytes: prometheus.NewDesc("mqtt_publish_sent_bytes_total", "Payload bytes of the PUBLISH packets handed to client connections, by QoS.",
			[]string{"qos"}, nil),
		droppedBy: prometheus.NewDesc("mqtt_messages_dropped_by_reason_total", "Deliveries dropped, by reason.",
			[]string{"reason"}, nil),
		authFail: prometheus.NewDesc("mqtt_auth_failures_total", "Refused authentications, by reason.",
			[]string{"reason"}, nil),
		denied: prometheus.NewDesc("mqtt_auth_denied_total", "Publishes and subscriptions refused by the ACL, by action.",
			[]string{"action"}, nil),
		limits: prometheus.NewDesc("mqtt_limits_exceeded_total", "Times a client went over a configured limit (refused, closed, answered with an error code or slowed down), by limit.",
			[]string{"limit"}, nil),
		lisOpen: prometheus.NewDesc("mqtt_listener_connections", "Network connections open now, by listener.",
			[]string{"listener"}, nil),
		lisTotal: prometheus.NewDesc("mqtt_listener_connections_total", "Network connections accepted since start, by listener.",
			[]string{"listener"}, nil),
		inflight: d("mqtt_messages_inflight", "QoS 1 and 2 messages sent and not yet acknowledged, over all sessions."),
		queued:   d("mqtt_messages_queued", "Messages waiting in session queues, over all sessions."),
		commit: prometheus.NewDesc("mqtt_store_commit_duration_seconds", "Time taken by store batch commits, synced or not.",
			[]string{"sync"}, nil),
		holds:       d("mqtt_flow_holds_total", "Times a publisher was held back because a subscriber's queue was full."),
		heldSeconds: d("mqtt_flow_held_seconds_total", "Time publishers spent held back, summed."),
		stalls:      d("mqtt_flow_stalls_total", "Times a held publisher's connection stopped being read."),
		globalWaits: d("mqtt_flow_global_waits_total", "Publishes held for limits.max_total_queued_bytes."),
		conflated:   d("mqtt_flow_conflated_total", "Queued messages replaced by a newer one of their topic (latest-value delivery)."),
		slowConsumer: prometheus.NewDesc("mqtt_flow_slow_consumer_actions_total", "Slow-consumer policy actions, by kind (disconnect, drop).",
			[]string{"action"}, nil),
		queuedBytes: d("mqtt_flow_queued_bytes", "Topic and payload bytes waiting in session and connection queues."),
	}
}

// Describe sends nothing: the collector is unchecked, because the byte
// counters appear only when the broker counts bytes.
func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	v := c.src.Counters()
	gauge := func(d *prometheus.Desc, x float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, x) }
	counter := func(d *prometheus.Desc, x uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(x))
	}
	gauge(c.connected, float64(v.Connected))
	counter(c.connections, v.ConnectionsTotal)
	counter(c.msgIn, v.MessagesIn)
	counter(c.msgOut, v.MessagesOut)
	counter(c.dropped, v.Dropped)
	counter(c.storeErrors, v.StoreErrors)
	gauge(c.sessions, float64(v.Sessions))
	gauge(c.subscriptions, float64(v.Subscriptions))
	gauge(c.retained, float64(v.Retained))
	counter(c.refused, v.Refused)
	for proto, n := range v.ConnectedByProtocol {
		ch <- prometheus.MustNewConstMetric(c.byProtocol, prometheus.GaugeValue, float64(n), proto)
	}
	if v.HasBytes {
		counter(c.bytesIn, v.BytesIn)
		counter(c.bytesOut, v.BytesOut)
	}
	dt, ok := c.src.(Detailer)
	if !ok {
		return
	}
	d := dt.Details()
	lv := func(desc *prometheus.Desc, t prometheus.ValueType, x float64, label string) {
		ch <- prometheus.MustNewConstMetric(desc, t, x, label)
	}
	for q := range 3 {
		qs := strconv.Itoa(q)
		lv(c.pubIn, prometheus.CounterValue, float64(d.InByQoS[q].Messages), qs)
		lv(c.pubInBytes, prometheus.CounterValue, float64(d.InByQoS[q].Bytes), qs)
		lv(c.pubOut, prometheus.CounterValue, float64(d.OutByQoS[q].Messages), qs)
		lv(c.pubOutBytes, prometheus.CounterValue, float64(d.OutByQoS[q].Bytes), qs)
	}
	for r, n := range d.DroppedByReason {
		lv(c.droppedBy, prometheus.CounterValue, float64(n), r)
	}
	for r, n := range d.AuthFailures {
		lv(c.authFail, prometheus.CounterValue, float64(n), r)
	}
	for a, n := range d.Denied {
		lv(c.denied, prometheus.CounterValue, float64(n), a)
	}
	for l, n := range d.LimitsExceeded {
		lv(c.limits, prometheus.CounterValue, float64(n), l)
	}
	for _, l := range d.Listeners {
		lv(c.lisOpen, prometheus.GaugeValue, float64(l.Open), l.Name)
		lv(c.lisTotal, prometheus.CounterValue, float64(l.Total), l.Name)
	}
	gauge(c.inflight, float64(d.Inflight))
	gauge(c.queued, float64(d.Queued))
	counter(c.holds, d.Flow.Holds)
	ch <- prometheus.MustNewConstMetric(c.heldSeconds, prometheus.CounterValue, d.Flow.HeldSeconds)
	counter(c.stalls, d.Flow.Stalls)
	counter(c.globalWaits, d.Flow.GlobalWaits)
	counter(c.conflated, d.Flow.Conflated)
	for _, a := range []string{"disconnect", "drop"} {
		lv(c.slowConsumer, prometheus.CounterValue, float64(d.Flow.SlowConsumer[a]), a)
	}
	gauge(c.queuedBytes, float64(d.Flow.QueuedBytes))
	for _, h := range []struct {
		label string
		r     HistogramReading
	}{{"true", d.CommitSynced}, {"false", d.CommitUnsynced}} {
		ch <- prometheus.MustNewConstHistogram(c.commit, h.r.Count, h.r.Sum, h.r.Buckets, h.label)
	}
}
