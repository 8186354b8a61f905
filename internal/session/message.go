// Package session is the per-client MQTT session state machine: packet
// identifiers, inflight windows, the QoS 1/2 flows in both directions, the
// offline queue, outbound topic aliases and message expiry. It does no I/O and
// reads no clock: callers pass `now` and get back the packets to send.
package session

import (
	"time"

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

	enc wireCache // encodings shared by every subscriber
}

// Origin names a message by the node run that published it and its
// sequence number there. A session takes each origin once (see Taken).
type Origin struct {
	Instance uint64 `json:"i"`
	Seq      uint64 `json:"s"`
}

// IsZero reports whether o names no message.
func (o Origin) IsZero() bool { return o == Origin{} }

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
