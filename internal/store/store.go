// Package store is Starling's durable state: sessions, subscriptions,
// outbound (inflight and queued) messages, inbound QoS 2 packet IDs, retained
// messages and the message bodies they share. The broker keeps the live
// state in memory and writes every change through a Batch; at start it reads
// everything back with Load.
//
// Contract, for every implementation (contract_test.go runs it on each):
//   - A Batch is applied atomically: after a crash either all of it or none
//     of it is visible to Load.
//   - Commit(true) returns only once the batch survives a crash of the
//     process and, under sync policy "always", of the machine. Commit(false)
//     may be lost by a crash, but never reordered before an earlier batch.
//   - Batches are applied in Commit order; a later Put of a key replaces it,
//     a Delete removes it.
//   - DeleteSession removes the session and everything keyed by its client
//     ID (subscriptions, outbound, inbound, taken); it does not touch
//     messages.
//   - Commit errors (disk full, I/O) are returned, never panicked, and leave
//     the store usable for later batches.
//   - Load calls the visitor's functions for every record, sessions first,
//     then messages, then the rest, in key order within a kind.
package store

import (
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// Message is a stored application message.
type Message struct {
	Topic     string
	Payload   []byte
	QoS       byte
	Retain    bool
	Props     packet.Properties // message properties only (payload format, content type, response topic, correlation data, user properties)
	Expiry    time.Time         // zero: never
	Publisher string
	// Origin names the message across a cluster (the publishing node's
	// run and its sequence number there); zero on a single node.
	Origin Origin `json:",omitempty"`
}

// Origin is a message's name across a cluster's nodes.
type Origin struct {
	Instance uint64 `json:"i"`
	Seq      uint64 `json:"s"`
}

// Will is a will message waiting for its connection to end and its delay.
type Will struct {
	Message
	Delay time.Duration
	// ExpiryInterval is the will's message expiry in seconds, counted from
	// publication; 0 = none.
	ExpiryInterval uint32
}

// Session is a persistent session (expiry interval > 0).
type Session struct {
	ClientID       string
	Version        byte
	ExpiryInterval uint32 // seconds; 0xFFFFFFFF never
	// DisconnectedAt is when the last connection ended; zero while connected
	// (a broker that stops while clients are connected reads zero at start
	// and counts from its own start).
	DisconnectedAt time.Time
	Will           *Will // nil when none is pending
}

// Subscription is one subscription of a session.
type Subscription struct {
	Filter  string // as subscribed, "$share/group/..." included
	Options packet.Subscription
	ID      int // subscription identifier, 0 for none
}

// Outbound states.
const (
	Queued      byte = 0 // not sent yet (no packet ID)
	WaitPuback  byte = 1 // QoS 1 PUBLISH sent with PacketID
	WaitPubrec  byte = 2 // QoS 2 PUBLISH sent with PacketID
	WaitPubcomp byte = 3 // PUBREL sent
)

// Outbound is one message on its way to one session, queued or inflight.
type Outbound struct {
	MessageID uint64
	QoS       byte
	Retain    bool
	SubIDs    []int
	Group     string // $share group it came through, "" if none
	Filter    string // the group's filter
	PacketID  uint16 // 0 while queued
	State     byte
}

// Batch collects changes applied together by Commit. A Batch is used by one
// goroutine and is done after Commit.
type Batch interface {
	PutSession(s *Session)
	DeleteSession(clientID string)
	PutSubscription(clientID string, s *Subscription)
	DeleteSubscription(clientID, filter string)
	PutMessage(id uint64, m *Message)
	DeleteMessage(id uint64)
	PutOutbound(clientID string, seq uint64, o *Outbound)
	DeleteOutbound(clientID string, seq uint64)
	PutInbound(clientID string, packetID uint16)
	DeleteInbound(clientID string, packetID uint16)
	// PutTaken records, in slot, the name of a message a persistent
	// session took (a ring of slots per session; DeleteSession clears it).
	PutTaken(clientID string, slot uint16, t Taken)
	PutRetained(m *Message)
	DeleteRetained(topic string)
	// Len is the number of changes collected.
	Len() int
	// Commit applies the batch; sync asks for durability before returning.
	Commit(sync bool) error
}

// Visitor receives the records Load reads. A nil function skips its kind;
// an error stops Load and is returned.
type Visitor struct {
	Session      func(s *Session) error
	Message      func(id uint64, m *Message) error
	Subscription func(clientID string, s *Subscription) error
	Outbound     func(clientID string, seq uint64, o *Outbound) error
	Inbound      func(clientID string, packetID uint16) error
	Retained     func(m *Message) error
	Taken        func(clientID string, slot uint16, t Taken) error
}

// Taken is a message a persistent session took: its name, and how many
// the session had taken before it (to order the ring's slots).
type Taken struct {
	Origin Origin
	N      uint64
}

// Store is a durable (or, for tests, in-memory) state store.
type Store interface {
	NewBatch() Batch
	Load(v Visitor) error
	Close() error
}

// Sync policies for the pebble store.
const (
	SyncAlways   = "always"   // Commit(true) waits for fsync; concurrent commits share one
	SyncInterval = "interval" // fsync in the background every interval; a crash loses at most that window
	SyncNone     = "none"     // leave it to the OS; a machine crash loses what the OS had not written
)
