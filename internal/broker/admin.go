package broker

import (
	"crypto/tls"
	"fmt"
	"sort"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

// ClientSummary describes one session for operators.
type ClientSummary struct {
	ClientID       string
	Connected      bool
	Version        byte
	Username       string
	Remote         string
	ExpiryInterval uint32
	Persistent     bool
	Inflight       int
	Queued         int
	Subscriptions  []SubscriptionSummary
	DroppedQueue   uint64
	DroppedExpired uint64
	DroppedLarge   uint64
	// KeepAlive is the keep alive of the last connection in seconds, as
	// granted (a server keep alive replaces the client's); 0 for none.
	KeepAlive uint16
	// TLS is set when the last connection came over TLS (MQTT over TLS or
	// secure WebSocket); TLSVersion names the version ("TLS 1.3") and
	// ClientCert is the subject common name of a verified client
	// certificate, "" without one.
	TLS        bool
	TLSVersion string
	ClientCert string
	// Flow is what flow control did for and to it.
	Flow ClientFlow
	// ReceiveMax is the Receive Maximum of the last connection (65535 when
	// the client gave none, and for MQTT 3); Window is the outbound QoS 1/2
	// window the broker keeps to: the smaller of it and limits.max_inflight.
	ReceiveMax uint16
	Window     int
	// Listener names the listener of the last connection ("tcp", "http",
	// ...; "" when served by HandleConn); ConnectedAt is when it connected.
	Listener    string
	ConnectedAt time.Time
	// DisconnectReason is why the last connection ended, as the
	// "client disconnected" log line says it, and DisconnectedAt when;
	// empty before a connection of this session ended.
	DisconnectReason string
	DisconnectedAt   time.Time
	// Will is the pending will of the current or last connection; nil for
	// none.
	Will *WillSummary
}

// WillSummary is a session's will message, without its payload.
type WillSummary struct {
	Topic       string
	QoS         byte
	Retain      bool
	Delay       time.Duration
	PayloadSize int
}

// linkInfo is what operators see of how a connection came in; fixed at
// connect.
type linkInfo struct {
	receiveMax uint16 // the client's Receive Maximum, set at attach
	keepAlive  uint16
	tls        *linkTLS // nil: not TLS (a pointer: most idle clients' links are not, or the TLS ends at a proxy)
	listener   string
	// since is when it connected, in Unix nanoseconds (0: never): not a
	// time.Time, so that the client record fits the 256-byte class.
	since int64
}

// linkTLS is what operators see of a TLS connection.
type linkTLS struct {
	version    string
	clientCert string
}

func (h *handler) linkInfo() linkInfo {
	li := linkInfo{keepAlive: h.keepAlive, listener: h.listener, since: h.b.now().UnixNano()}
	if st := tlsState(h.c.NetConn()); st != nil {
		li.tls = &linkTLS{version: tls.VersionName(st.Version)}
		if len(st.PeerCertificates) > 0 {
			li.tls.clientCert = st.PeerCertificates[0].Subject.CommonName
		}
	}
	return li
}

// SubscriptionSummary is one subscription of a session.
type SubscriptionSummary struct {
	Filter string // as subscribed, $share/... included
	QoS    byte
	ID     int
	Latest bool          // latest-value delivery
	Sample time.Duration // sampled delivery interval, 0 for none
	// The MQTT 5 subscription options.
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
}

// Clients returns every session, sorted by client ID.
func (b *Broker) Clients() []ClientSummary {
	b.mu.Lock()
	cls := make([]*client, 0, len(b.clients))
	for _, cl := range b.clients {
		cls = append(cls, cl)
	}
	b.mu.Unlock()
	out := make([]ClientSummary, 0, len(cls))
	for _, cl := range cls {
		out = append(out, b.summary(cl))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

// Client returns one session's summary.
func (b *Broker) Client(id string) (ClientSummary, bool) {
	b.mu.Lock()
	cl := b.clients[id]
	b.mu.Unlock()
	if cl == nil {
		return ClientSummary{}, false
	}
	return b.summary(cl), true
}

func (b *Broker) summary(cl *client) ClientSummary {
	var subs []SubscriptionSummary
	b.subs.ClientSubscriptions(cl.id, func(group, filter string, v subValue) bool {
		f := filter
		if group != "" {
			f = "$share/" + group + "/" + filter
		}
		subs = append(subs, SubscriptionSummary{Filter: f, QoS: v.opts.QoS, ID: v.id, Latest: v.latest, Sample: v.sample,
			NoLocal: v.opts.NoLocal, RetainAsPublished: v.opts.RetainAsPublished, RetainHandling: v.opts.RetainHandling})
		return true
	})
	sort.Slice(subs, func(i, j int) bool { return subs[i].Filter < subs[j].Filter })
	cl.mu.Lock()
	defer cl.mu.Unlock()
	s := ClientSummary{ClientID: cl.id, Connected: cl.conn != nil, Version: cl.version, ExpiryInterval: cl.sess.ExpiryInterval,
		Persistent: cl.persistent(), Inflight: cl.sess.Inflight(), Queued: cl.sess.Queued(), Subscriptions: subs,
		DroppedQueue: cl.sess.Stats.DroppedQueueFull, DroppedExpired: cl.sess.Stats.DroppedExpired, DroppedLarge: cl.sess.Stats.DroppedTooLarge,
		KeepAlive: cl.link.keepAlive, Flow: cl.flowLocked(), ReceiveMax: cl.link.receiveMax, Window: b.windowOf(cl),
		Listener: cl.link.listener}
	if cl.link.since != 0 {
		s.ConnectedAt = time.Unix(0, cl.link.since)
	}
	if t := cl.link.tls; t != nil {
		s.TLS, s.TLSVersion, s.ClientCert = true, t.version, t.clientCert
	}
	if g := cl.gone; g != nil {
		s.DisconnectReason, s.DisconnectedAt = g.reason, g.at
	}
	if w := cl.will; w != nil && w.msg != nil {
		s.Will = &WillSummary{Topic: w.msg.Topic, QoS: w.msg.QoS, Retain: w.msg.Retain, Delay: w.delay, PayloadSize: len(w.msg.Payload)}
	}
	if info := cl.info.Load(); info != nil {
		s.Username, s.Remote = info.Username, info.Remote
	}
	return s
}

// windowOf is cl's outbound window (as the session's quota counts it).
// The caller holds cl.mu.
func (b *Broker) windowOf(cl *client) int {
	w := int(b.lim.MaxInflight)
	if rm := int(cl.link.receiveMax); rm != 0 && rm < w {
		w = rm
	}
	return w
}

// Kick disconnects a client (v5: DISCONNECT 0x98 administrative action);
// its session stays, subject to its expiry. It reports whether the client
// was connected.
func (b *Broker) Kick(id string) bool {
	b.mu.Lock()
	cl := b.clients[id]
	b.mu.Unlock()
	if cl == nil {
		return false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn == nil {
		return false
	}
	cl.closeConn(packet.AdministrativeAction, "kicked by admin")
	return true
}

// RetainedMessage is a retained message for operators.
type RetainedMessage struct {
	Topic   string
	Payload []byte
	QoS     byte
	Expiry  time.Time
}

// RetainedMatching returns the retained messages matching filter ("#" for
// all), at most limit of them (0 = no limit), sorted by topic.
func (b *Broker) RetainedMatching(filter string, limit int) ([]RetainedMessage, error) {
	if err := topic.ValidateFilter(filter); err != nil {
		return nil, err
	}
	ms := b.retained.match(filter, b.now())
	sort.Slice(ms, func(i, j int) bool { return ms[i].Topic < ms[j].Topic })
	if limit > 0 && len(ms) > limit {
		ms = ms[:limit]
	}
	out := make([]RetainedMessage, len(ms))
	for i, m := range ms {
		out[i] = RetainedMessage{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Expiry: m.Expiry}
	}
	return out, nil
}

// Message is a message published by an operator, with the MQTT 5
// properties a client could set.
type Message struct {
	Topic           string
	Payload         []byte
	QoS             byte
	Retain          bool
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []packet.UserProperty
	PayloadUTF8     bool   // Payload Format Indicator 1
	MessageExpiry   uint32 // seconds; 0 for none
}

// PublishMessage publishes a message from the broker itself (management
// API, $SYS topics), with its properties. It is routed like a client's,
// durable when QoS > 0, and returns the number of sessions it reached.
func (b *Broker) PublishMessage(m Message) (int, error) {
	if err := topic.ValidateName(m.Topic); err != nil {
		return 0, err
	}
	if m.ResponseTopic != "" {
		if err := topic.ValidateName(m.ResponseTopic); err != nil {
			return 0, fmt.Errorf("response topic: %w", err)
		}
	}
	sm := &session.Message{Topic: m.Topic, Payload: m.Payload, QoS: min(m.QoS, 2), Retain: m.Retain,
		Props: packet.Properties{ContentType: m.ContentType, ResponseTopic: m.ResponseTopic,
			CorrelationData: m.CorrelationData, UserProperties: m.UserProperties}}
	if m.PayloadUTF8 {
		one := byte(1)
		sm.Props.PayloadFormat = &one
	}
	if m.MessageExpiry > 0 {
		sm.Expiry = b.now().Add(time.Duration(m.MessageExpiry) * time.Second)
	}
	t := b.begin(m.QoS > 0)
	n := b.publish(sm, t)
	return n, t.commit(m.QoS > 0)
}

// Publish is PublishMessage for a message without properties.
func (b *Broker) Publish(topicName string, payload []byte, qos byte, retain bool) (int, error) {
	return b.PublishMessage(Message{Topic: topicName, Payload: payload, QoS: qos, Retain: retain})
}

// Subscriptions returns the number of subscriptions.
func (b *Broker) Subscriptions() int { return b.subs.Len() }
