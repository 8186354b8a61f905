package broker

import (
	"fmt"
	"hash/maphash"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

// Traffic holds the counters behind the detailed metrics. Everything on
// the message path is an atomic add: no lock, no allocation.
type Traffic struct {
	In, Out [3]QoSCount // PUBLISH packets and payload bytes, by QoS

	DroppedQueueFull atomic.Uint64 // offline queue full
	DroppedExpired   atomic.Uint64 // message expiry passed before delivery
	DroppedTooLarge  atomic.Uint64 // over the client's Maximum Packet Size
	DroppedNoMember  atomic.Uint64 // $share delivery left by an ended session with no member to take it

	// AuthFailures counts refused CONNECTs (and failed enhanced
	// authentication exchanges) by AuthFailureReasons index.
	AuthFailures [len(AuthFailureReasons)]atomic.Uint64
	// DeniedPublish and DeniedSubscribe count what the ACL refused
	// (publishes, wills and $SYS publishes; subscription filters).
	DeniedPublish, DeniedSubscribe atomic.Uint64
	// LimitsExceeded counts clients going over a configured limit, by
	// LimitNames index: refused, closed, answered with an error code or
	// slowed down.
	LimitsExceeded [len(LimitNames)]atomic.Uint64

	// CommitSynced and CommitUnsynced time the store's batch commits.
	CommitSynced, CommitUnsynced Histogram
}

// QoSCount counts messages and their payload bytes.
type QoSCount struct {
	Messages, Bytes atomic.Uint64
}

func (q *QoSCount) add(payload int) {
	q.Messages.Add(1)
	q.Bytes.Add(uint64(payload))
}

// AuthFailureReasons are the label values of AuthFailures.
var AuthFailureReasons = [...]string{"bad_username_or_password", "not_authorized", "bad_authentication_method", "banned", "auth_exchange_failed", "server_busy", "other"}

func authFailureIndex(code packet.ReasonCode) int {
	switch code {
	case packet.BadUsernameOrPassword:
		return 0
	case packet.NotAuthorized:
		return 1
	case packet.BadAuthenticationMethod:
		return 2
	case packet.Banned:
		return 3
	case packet.ServerBusy:
		return 5 // no verification slot before the connect timeout
	}
	return len(AuthFailureReasons) - 1
}

// LimitNames are the label values of LimitsExceeded: the config keys
// (under limits:) of the limits counted.
var LimitNames = [...]string{
	limMaxConnections:   "max_connections",
	limConnPerAddress:   "max_connections_per_address",
	limConnRate:         "connect_rate_per_address",
	limConnectTimeout:   "connect_timeout",
	limPublishRate:      "publish_rate",
	limPublishBytesRate: "publish_bytes_rate",
	limSubscriptions:    "max_subscriptions_per_client",
	limTopicLength:      "max_topic_length",
	limTopicLevels:      "max_topic_levels",
}

// Indexes of LimitNames.
const (
	limMaxConnections = iota
	limConnPerAddress
	limConnRate
	limConnectTimeout
	limPublishRate
	limPublishBytesRate
	limSubscriptions
	limTopicLength
	limTopicLevels
)

// exceeded counts a client going over the limit at LimitNames[i].
func (b *Broker) exceeded(i int) { b.Traffic.LimitsExceeded[i].Add(1) }

// topicExceeded counts a topic name or filter over max_topic_length or
// max_topic_levels (key as returned by limit.Config.TopicExceeded).
func (b *Broker) topicExceeded(key string) {
	if key == "max_topic_levels" {
		b.exceeded(limTopicLevels)
	} else {
		b.exceeded(limTopicLength)
	}
}

// authFailed counts a refused authentication.
func (b *Broker) authFailed(code packet.ReasonCode) {
	b.Traffic.AuthFailures[authFailureIndex(code)].Add(1)
}

// HistogramBounds are the upper bounds, in seconds, of Histogram's buckets.
var HistogramBounds = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// Histogram is a lock-free latency histogram over HistogramBounds.
type Histogram struct {
	buckets [len(HistogramBounds) + 1]atomic.Uint64 // the last one is +Inf
	count   atomic.Uint64
	sumNS   atomic.Uint64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(HistogramBounds) && s > HistogramBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumNS.Add(uint64(max(d, 0)))
	h.count.Add(1)
}

// Snapshot returns the cumulative bucket counts (as Prometheus wants them,
// keyed by upper bound), the count and the sum in seconds. Concurrent
// observations may make it slightly inconsistent, never wrong by more than
// those.
func (h *Histogram) Snapshot() (buckets map[float64]uint64, count uint64, sum float64) {
	buckets = make(map[float64]uint64, len(HistogramBounds))
	var cum uint64
	for i, ub := range HistogramBounds {
		cum += h.buckets[i].Load()
		buckets[ub] = cum
	}
	count = max(h.count.Load(), cum)
	return buckets, count, time.Duration(h.sumNS.Load()).Seconds()
}

// ListenerStats counts one listener's network connections.
type ListenerStats struct {
	Name  string
	Open  atomic.Int64  // open now (CONNECT or not)
	Total atomic.Uint64 // accepted since start
}

// listenerStats returns the counters of a listener, made on first use.
// Called once per connection, so labels are not resolved per message.
func (b *Broker) listenerStats(name string) *ListenerStats {
	if name == "" {
		name = "other"
	}
	b.obsMu.Lock()
	defer b.obsMu.Unlock()
	if b.listeners == nil {
		b.listeners = make(map[string]*ListenerStats)
	}
	ls := b.listeners[name]
	if ls == nil {
		ls = &ListenerStats{Name: name}
		b.listeners[name] = ls
	}
	return ls
}

// Listeners returns the counters of every listener that had a connection,
// sorted by name.
func (b *Broker) Listeners() []*ListenerStats {
	b.obsMu.Lock()
	out := make([]*ListenerStats, 0, len(b.listeners))
	for _, ls := range b.listeners {
		out = append(out, ls)
	}
	b.obsMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// HandleConnOn is HandleConn for a connection accepted by the named
// listener ("tcp", "mqtts", "http"...), counted under that name; the
// Authenticator sees the name in ConnectInfo.Listener.
func (b *Broker) HandleConnOn(nc net.Conn, listener string) {
	ls := b.listenerStats(listener)
	ls.Open.Add(1)
	ls.Total.Add(1)
	b.serveConn(nc, listener, ls)
}

// closed counts a connection of the listener closed; ls may be nil.
func (ls *ListenerStats) closed() {
	if ls != nil {
		ls.Open.Add(-1)
	}
}

// DroppedSlowReader returns the QoS 0 publishes dropped because a
// client read too slowly (its connection's queue was full). They are not
// in Stats.Dropped.
func (b *Broker) DroppedSlowReader() uint64 { return b.bytes.Dropped.Load() }

// QueueTotals sums inflight and queued messages over every session. It
// takes each session's lock in turn: for scrapes, not the message path.
func (b *Broker) QueueTotals() (inflight, queued int) {
	b.mu.Lock()
	cls := make([]*client, 0, len(b.clients))
	for _, cl := range b.clients {
		cls = append(cls, cl)
	}
	b.mu.Unlock()
	for _, cl := range cls {
		cl.mu.Lock()
		inflight += cl.sess.Inflight()
		queued += cl.sess.Queued()
		cl.mu.Unlock()
	}
	return inflight, queued
}

// QueueLimits returns the configured per-session queue and inflight
// limits, for slow-consumer alerts.
func (b *Broker) QueueLimits() (maxQueued, maxInflight int) {
	return b.lim.MaxQueued, int(b.lim.MaxInflight)
}

// clientTraffic counts one session's messages, for "top clients".
type clientTraffic struct {
	msgsIn, bytesIn, msgsOut, bytesOut atomic.Uint64
}

// ClientTraffic is one session's traffic since it was created.
type ClientTraffic struct {
	ClientID                                      string
	Connected                                     bool
	MessagesIn, BytesIn                           uint64
	MessagesOut, BytesOut                         uint64
	Inflight, Queued                              int
	DroppedQueue, DroppedExpired, DroppedTooLarge uint64
	Flow                                          ClientFlow
	Window                                        int // outbound window: see ClientSummary
}

// Traffics returns every session's traffic counters and queue sizes.
func (b *Broker) Traffics() []ClientTraffic {
	b.mu.Lock()
	cls := make([]*client, 0, len(b.clients))
	for _, cl := range b.clients {
		cls = append(cls, cl)
	}
	b.mu.Unlock()
	out := make([]ClientTraffic, 0, len(cls))
	for _, cl := range cls {
		ct := ClientTraffic{ClientID: cl.id, MessagesIn: cl.traffic.msgsIn.Load(), BytesIn: cl.traffic.bytesIn.Load(),
			MessagesOut: cl.traffic.msgsOut.Load(), BytesOut: cl.traffic.bytesOut.Load()}
		cl.mu.Lock()
		ct.Connected = cl.conn != nil
		ct.Inflight, ct.Queued = cl.sess.Inflight(), cl.sess.Queued()
		st := cl.sess.Stats
		ct.Flow = cl.flowLocked()
		ct.Window = b.windowOf(cl)
		cl.mu.Unlock()
		ct.DroppedQueue, ct.DroppedExpired, ct.DroppedTooLarge = st.DroppedQueueFull, st.DroppedExpired, st.DroppedTooLarge
		out = append(out, ct)
	}
	return out
}

// sent counts packets handed to a client's connection: the PUBLISHes
// among them by QoS, for the broker and for the client.
func (b *Broker) sent(cl *client, ps ...packet.Packet) {
	for _, p := range ps {
		var topicName string
		var qos byte
		var retain bool
		var pid uint16
		var payload []byte
		switch p := p.(type) {
		case *session.Outgoing:
			topicName, qos, retain, pid, payload = p.Msg.Topic, p.QoS, p.Retain, p.PacketID, p.Msg.Payload
		case *packet.Publish:
			topicName, qos, retain, pid, payload = p.Topic, p.QoS, p.Retain, p.PacketID, p.Payload
		default:
			continue
		}
		b.Stats.MessagesOut.Add(1)
		b.Traffic.Out[min(qos, 2)].add(len(payload))
		if cl != nil {
			cl.traffic.msgsOut.Add(1)
			cl.traffic.bytesOut.Add(uint64(len(payload)))
		}
		if tr := b.tracer.Load(); tr != nil {
			tr.message(cl, "out", topicName, qos, retain, pid, payload)
		}
	}
}

// received counts a client's PUBLISH.
func (h *handler) received(p *packet.Publish) {
	b := h.b
	b.Stats.MessagesIn.Add(1)
	b.Traffic.In[min(p.QoS, 2)].add(len(p.Payload))
	h.cl.traffic.msgsIn.Add(1)
	h.cl.traffic.bytesIn.Add(uint64(len(p.Payload)))
}

// countDrops adds what a session dropped between two readings of its
// stats to the broker's counters, by reason. Every session call that can
// drop (a delivery, and the queue refills of a reconnect or an ack, which
// skip expired and too large messages) goes through it.
func (b *Broker) countDrops(before, after session.Stats) {
	b.dropped(before.DroppedExpired, after.DroppedExpired, &b.Traffic.DroppedExpired)
	b.dropped(before.DroppedQueueFull, after.DroppedQueueFull, &b.Traffic.DroppedQueueFull)
	b.dropped(before.DroppedTooLarge, after.DroppedTooLarge, &b.Traffic.DroppedTooLarge)
	b.dropped(before.DroppedPolicy, after.DroppedPolicy, &b.Flow.DroppedPolicy)
	b.dropped(before.DroppedOverflow, after.DroppedOverflow, &b.Flow.Overflow)
	if n := after.Conflated - before.Conflated; n > 0 {
		b.Flow.Conflated.Add(n) // replaced, not lost: not a drop
	}
}

// dropped counts what a delivery made a session drop, by reason.
func (b *Broker) dropped(before, after uint64, c *atomic.Uint64) {
	if n := after - before; n > 0 {
		c.Add(n)
		b.Stats.Dropped.Add(n)
	}
}

// ClientChanges signals, without blocking the broker, that a client
// connected or disconnected. Signals coalesce: one pending signal stands
// for any number of changes. There is one channel per broker: give it one
// reader.
func (b *Broker) ClientChanges() <-chan struct{} { return b.changes }

func (b *Broker) clientChanged() {
	select {
	case b.changes <- struct{}{}:
	default: // one is pending already
	}
}

// Topic traffic sampling, for "top topics". It runs only while Enable has
// been called within the last sampling period (someone watches), and
// costs then a hash and a few atomic operations per PUBLISH. Topics share
// a fixed number of slots: while a slot is taken in a period, another
// topic hashing to it is counted as "other" (topTopicsOther).
const topicSlots = 4096

type topicSlot struct {
	name  atomic.Pointer[string]
	msgs  atomic.Uint64
	bytes atomic.Uint64
	fan   atomic.Uint64 // deliveries
}

func (sl *topicSlot) reset() {
	sl.name.Store(nil)
	sl.msgs.Store(0)
	sl.bytes.Store(0)
	sl.fan.Store(0)
}

type topicSampler struct {
	seed    maphash.Seed
	enabled atomic.Bool
	slots   [topicSlots]topicSlot
	other   topicSlot
}

// TopicTraffic is one topic's traffic in a sampling period.
type TopicTraffic struct {
	Topic      string
	Messages   uint64
	Bytes      uint64
	Deliveries uint64
}

func (s *topicSampler) add(name string, payload, delivered int) {
	if !s.enabled.Load() {
		return
	}
	sl := &s.slots[maphash.String(s.seed, name)%topicSlots]
	cur := sl.name.Load()
	if cur == nil {
		n := name
		if !sl.name.CompareAndSwap(nil, &n) {
			cur = sl.name.Load()
		}
	}
	if cur != nil && *cur != name {
		sl = &s.other
	}
	sl.msgs.Add(1)
	sl.bytes.Add(uint64(payload))
	sl.fan.Add(uint64(delivered))
}

// SampleTopics turns topic sampling on and returns the topics counted
// since the last call (none on the first), busiest first, at most limit,
// plus the traffic of topics that did not get a slot. Call it once per
// period from one goroutine; stop calling and call StopTopicSampling when
// nobody watches.
func (b *Broker) SampleTopics(limit int) (top []TopicTraffic, other TopicTraffic) {
	s := &b.topics
	if !s.enabled.Swap(true) {
		// Leftovers from an earlier sampling would skew the first rates.
		for i := range s.slots {
			s.slots[i].reset()
		}
		s.other.reset()
		return nil, TopicTraffic{}
	}
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.name.Load() == nil {
			continue
		}
		// The name goes first: a message counted between the swaps lands
		// in the next period under whoever takes the slot, at worst.
		n := sl.name.Swap(nil)
		t := TopicTraffic{Messages: sl.msgs.Swap(0), Bytes: sl.bytes.Swap(0), Deliveries: sl.fan.Swap(0)}
		if n == nil || t.Messages == 0 {
			continue
		}
		t.Topic = *n
		top = append(top, t)
	}
	other = TopicTraffic{Topic: "", Messages: s.other.msgs.Swap(0), Bytes: s.other.bytes.Swap(0), Deliveries: s.other.fan.Swap(0)}
	sort.Slice(top, func(i, j int) bool {
		if top[i].Bytes != top[j].Bytes {
			return top[i].Bytes > top[j].Bytes
		}
		return top[i].Topic < top[j].Topic
	})
	if limit > 0 && len(top) > limit {
		top = top[:limit]
	}
	return top, other
}

// StopTopicSampling turns topic sampling off.
func (b *Broker) StopTopicSampling() {
	b.topics.enabled.Store(false)
}

// TraceEvent is one packet seen by a trace.
type TraceEvent struct {
	Time      time.Time
	ClientID  string
	Direction string // "in" (from the client) or "out" (to it)
	Type      string // PUBLISH, SUBSCRIBE, PINGREQ...
	Topic     string // PUBLISH only
	QoS       byte
	Retain    bool
	PacketID  uint16
	Size      int // payload bytes
	Payload   []byte
}

// Trace collects the packets of one client, or the PUBLISHes on topics
// matching one filter, into a bounded buffer. At most Rate events a
// second are kept; the rest are counted in Dropped.
type Trace struct {
	ClientID string // trace this client's packets, or
	Filter   string // PUBLISHes whose topic matches this filter
	Rate     int    // events per second kept; default 50

	mu      sync.Mutex
	events  []TraceEvent
	window  time.Time
	inWin   int
	dropped uint64
}

// maxTraceEvents bounds what a trace holds between two Drain calls.
const maxTraceEvents = 200

// maxTracePayload bounds the payload bytes kept per event.
const maxTracePayload = 256

// SetTrace starts tracing with t, replacing any trace; nil stops it.
// Without a trace, each packet costs one atomic load.
func (b *Broker) SetTrace(t *Trace) {
	if t != nil && t.Rate <= 0 {
		t.Rate = 50
	}
	b.tracer.Store(t)
}

// CurrentTrace returns the running trace, or nil.
func (b *Broker) CurrentTrace() *Trace { return b.tracer.Load() }

// Drain takes the events collected since the last call and the number
// dropped by the rate limit or the bound.
func (t *Trace) Drain() ([]TraceEvent, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ev, d := t.events, t.dropped
	t.events, t.dropped = nil, 0
	return ev, d
}

func (t *Trace) add(e TraceEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Time.Sub(t.window) >= time.Second {
		t.window, t.inWin = e.Time, 0
	}
	if t.inWin >= t.Rate || len(t.events) >= maxTraceEvents {
		t.dropped++
		return
	}
	t.inWin++
	if len(e.Payload) > maxTracePayload {
		e.Payload = e.Payload[:maxTracePayload]
	}
	e.Payload = append([]byte(nil), e.Payload...)
	t.events = append(t.events, e)
}

// packet traces a packet read from cl (PUBLISH aside).
func (t *Trace) packet(cl *client, p packet.Packet) {
	if _, ok := p.(*packet.Publish); ok {
		return // traced by onPublish, with its topic alias resolved
	}
	if t.ClientID == "" || cl == nil || cl.id != t.ClientID {
		return
	}
	e := TraceEvent{Time: time.Now(), ClientID: cl.id, Direction: "in", Type: packetName(p.Type())}
	switch p := p.(type) {
	case *packet.Subscribe:
		e.PacketID = p.PacketID
		if len(p.Subscriptions) > 0 {
			e.Topic = p.Subscriptions[0].Filter
		}
	case *packet.Unsubscribe:
		e.PacketID = p.PacketID
		if len(p.Filters) > 0 {
			e.Topic = p.Filters[0]
		}
	case *packet.Ack:
		e.PacketID = p.PacketID
	}
	t.add(e)
}

func (t *Trace) message(cl *client, dir, name string, qos byte, retain bool, pid uint16, payload []byte) {
	id := ""
	if cl != nil {
		id = cl.id
	}
	if t.ClientID != "" {
		if id != t.ClientID {
			return
		}
	} else if !topic.Match(t.Filter, name) {
		return
	}
	t.add(TraceEvent{Time: time.Now(), ClientID: id, Direction: dir, Type: "PUBLISH", Topic: name, QoS: qos,
		Retain: retain, PacketID: pid, Size: len(payload), Payload: payload})
}

// Receiver is a subscription that matches a topic: its session would get
// a message published there (one member per $share group).
type Receiver struct {
	ClientID  string
	Filter    string // the filter as subscribed, without $share/<group>/
	Group     string // share group, "" for a plain subscription
	QoS       byte
	NoLocal   bool
	Connected bool
	// Allowed is the ACL's answer for reading the topic; a subscription
	// the ACL denies gets nothing.
	Allowed bool
}

// Receivers lists the subscriptions matching a topic name, sorted by
// group, client ID and filter.
func (b *Broker) Receivers(topicName string) ([]Receiver, error) {
	if err := topic.ValidateName(topicName); err != nil {
		return nil, err
	}
	entries := b.subs.Match(topicName, nil)
	out := make([]Receiver, 0, len(entries))
	for _, e := range entries {
		cl := e.Value.cl
		out = append(out, Receiver{ClientID: cl.id, Filter: e.Filter, Group: e.Group, QoS: e.Value.opts.QoS,
			NoLocal: e.Value.opts.NoLocal, Connected: cl.isOnline(), Allowed: b.allow(cl.info.Load(), ActRead, topicName)})
	}
	sort.Slice(out, func(i, j int) bool {
		a, c := out[i], out[j]
		if a.Group != c.Group {
			return a.Group < c.Group
		}
		if a.ClientID != c.ClientID {
			return a.ClientID < c.ClientID
		}
		return a.Filter < c.Filter
	})
	return out, nil
}

// SubscriptionCount returns the number of this node's subscriptions
// whose filter matches the topic name (shared ones included, each member
// counted), leaving out those of the client except ("" for none). It reads
// the subscription index without allocating.
func (b *Broker) SubscriptionCount(topicName, except string) int {
	return b.subs.Count(topicName, except)
}

// Subscribed reports whether any subscription matches a topic name: the
// broker's feeds compute nothing for topics nobody receives.
func (b *Broker) Subscribed(topicName string) bool {
	return len(b.subs.Match(topicName, nil)) > 0
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

// PublishMessage publishes m like Publish, with its properties. It
// returns the number of sessions it reached.
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
