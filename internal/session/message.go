// Package session is the per-client MQTT session state machine: packet
// identifiers, inflight windows, the QoS 1/2 flows in both directions, the
// offline queue, outbound topic aliases and message expiry. It does no I/O and
// reads no clock: callers pass `now` and get back the packets to send.
package session

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/bufpool"
	"github.com/starling-mqtt/starling/internal/packet"
)

// Message is one application message as the broker routes it. It is
// immutable once published: every subscriber gets a pointer to the same value.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte // QoS it was published with
	Retain  bool
	// Props are the message properties forwarded to subscribers (payload
	// format, content type, response topic, correlation data, user
	// properties). Message expiry is kept as Expiry instead.
	Props packet.Properties
	// Expiry is when the message stops being deliverable; zero means never.
	Expiry time.Time
	// Publisher is the client ID that sent it, for No Local.
	Publisher string
	// ID identifies the message in a durable store; 0 until stored.
	ID uint64
	// Origin identifies the message across a cluster's nodes: the same
	// on every copy, whichever way it travels (zero on a single node).
	Origin Origin
	// Hold, if set, is done once the message may go out to clients (not
	// at all unless OK): a QoS 2 message from a client in a cluster
	// waits, whichever operation sends it, for its publish's operation,
	// which replicates its packet ID with its name (see the broker's
	// tx.send).
	Hold Release

	enc wireCache // encodings shared by every subscriber

	// A pooled message (NewPooled) goes back to its pool, with its payload
	// buffer and its encodings, when its last reference is dropped, unless
	// something kept it without a reference (Pin). A message made any
	// other way is the collector's, and Ref, Unref and Pin do nothing.
	pooled bool
	refs   atomic.Int32
	pinned atomic.Bool
	buf    *[]byte // bufpool buffer the payload lives in, nil if none
	// first is the Outgoing of a pooled message's first delivery, taken
	// (firstTaken) instead of one from the pool: a message with one
	// subscriber costs no Outgoing pool round trip. Atomic: the router
	// and a sampled delivery's timer (broker flushSamples) may deliver
	// the same message at once.
	first      Outgoing
	firstTaken atomic.Bool
}

var msgPool = sync.Pool{New: func() any { return &Message{pooled: true} }}

// NewPooled returns an empty message from a pool holding one reference,
// the caller's. Every holder of the message takes a reference (Ref) and
// drops it (Unref) when done; a holder that cannot say when it is done
// must Pin it. The QoS 0 path of a client's PUBLISH uses it: its only
// holders are the deliveries waiting in connections' queues (Outgoing).
func NewPooled() *Message {
	m := msgPool.Get().(*Message)
	m.refs.Store(1)
	return m
}

// Own gives m the buffer its payload lives in (from bufpool), to be given
// back with m. Only for a pooled message, before it is published.
func (m *Message) Own(buf *[]byte) {
	if m.pooled {
		m.buf = buf
	}
}

// Ref takes a reference to a pooled message.
func (m *Message) Ref() {
	if m.pooled {
		m.refs.Add(1)
	}
}

// Unref drops a reference; the last one recycles a pooled message that is
// not pinned. Nothing may use m after its own reference is dropped.
func (m *Message) Unref() {
	if !m.pooled {
		return
	}
	switch n := m.refs.Add(-1); {
	case n > 0:
	case n < 0:
		panic("session: Message reference dropped twice")
	case !m.pinned.Load():
		m.recycle()
	}
}

// Pin keeps a pooled message out of its pool for good: for holders that
// keep it without a reference (a sampled delivery waiting for its flush,
// a retained or stored message). Call it while holding a reference.
func (m *Message) Pin() {
	if m.pooled {
		m.pinned.Store(true)
	}
}

// recycle gives a pooled message, its encodings and its buffer back.
func (m *Message) recycle() {
	for i := range m.enc {
		for j := range m.enc[i] {
			if w := m.enc[i][j].Swap(nil); w != nil {
				putWire(w)
			}
		}
	}
	if m.buf != nil {
		bufpool.Put(m.buf)
	}
	// Cleared whole, so that no field, however added, travels with the
	// next message that reuses m. Nothing else refers to m now.
	*m = Message{pooled: true}
	msgPool.Put(m)
}

// Release is what a message waits for before it goes out (Message.Hold).
type Release interface {
	Done() <-chan struct{}
	OK() bool
}

// Origin names a message by the node run that published it and its
// sequence number there. A session takes each origin once (see Taken).
type Origin struct {
	Instance uint64 `json:"i"`
	Seq      uint64 `json:"s"`
}

// IsZero reports whether o names no message.
func (o Origin) IsZero() bool { return o == Origin{} }

// willBit marks a will's name (WillOrigin); a node's sequence numbers
// never reach it.
const willBit = 1 << 63

// WillOrigin names a will, set by the node run instance as its seq-th
// name. A session that is not persistent remembers such names too (and
// only those): a will is the one message another node may publish again,
// under its name, after its node's loss (see Taken).
func WillOrigin(instance, seq uint64) Origin { return Origin{Instance: instance, Seq: seq | willBit} }

// IsWill reports whether o names a will (WillOrigin).
func (o Origin) IsWill() bool { return o.Seq&willBit != 0 }

// Expired reports whether the message may no longer be delivered at now.
func (m *Message) Expired(now time.Time) bool {
	return !m.Expiry.IsZero() && !now.Before(m.Expiry)
}

// Delivery is a message on its way to one session, with what the matching
// subscriptions decided for that session.
type Delivery struct {
	Msg    *Message
	QoS    byte  // granted: min(message QoS, subscription QoS)
	Retain bool  // retain flag as sent: retained-on-subscribe or retain-as-published
	SubIDs []int // subscription identifiers of every matching subscription (v5)
	// Group is the $share group the message was routed through, "" if none;
	// such messages are handed to another member when this session goes away.
	Group, Filter string
	// Latest asks for latest-value delivery: while the delivery waits in
	// the queue, a newer one of the same topic replaces it (conflation).
	Latest bool
	// Sample, when set, asks for at most one QoS 0 delivery per topic per
	// this interval, the newest (the broker holds the rest back); not kept
	// in a store.
	Sample time.Duration
	// Held says the delivery comes from a publisher the broker holds back
	// when this session is full (not kept in a store): a connected
	// session keeps it past its bounds, whatever HardLimit.
	Held bool
	// Seq orders the session's deliveries and keys them in a store; the
	// session assigns it when it keeps the delivery.
	Seq uint64
}

// size is what a delivery counts against the queued-bytes bound: the
// message's topic and payload.
func (d *Delivery) size() int { return len(d.Msg.Topic) + len(d.Msg.Payload) }
