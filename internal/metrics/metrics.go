// Package metrics exposes a broker's counters: a Prometheus registry per
// broker (no global registry) whose collector reads the counters on each
// scrape, and the $SYS topic tree with Mosquitto's names (sys.go).
//
// Metric names follow mqtt_<subsystem>_<name>_<unit>, with _total on
// counters and never a client ID or topic as a label.
package metrics

import (
	"net/http"

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

func (s brokerSource) Counters() Counters {
	st := &s.b.Stats
	c := Counters{
		Connected:        st.Connections.Load(),
		ConnectionsTotal: st.ConnectionsTotal.Load(),
		MessagesIn:       st.MessagesIn.Load(),
		MessagesOut:      st.MessagesOut.Load(),
		Dropped:          st.Dropped.Load(),
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
func New(src Source) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
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
}
