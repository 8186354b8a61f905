package broker

import (
	"net"
	"sort"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
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
