package session

import (
	"errors"
	"sort"
	"sync/atomic"
	"time"
	"unique"

	"github.com/starling-mqtt/starling/internal/packet"
)

// NeverExpire is the session expiry interval meaning "never" (§3.1.2.11.2).
const NeverExpire = 0xFFFFFFFF

// ErrReceiveMaximum is returned when a client has more unreleased QoS 2
// messages than the receive maximum the broker announced [MQTT-3.3.4-9].
var ErrReceiveMaximum = errors.New("session: receive maximum exceeded")

// Limits are the broker-side bounds of one session.
type Limits struct {
	MaxQueued int // offline/backlog queue of QoS 1/2 deliveries
	// MaxQueuedBytes bounds the topic and payload bytes of that queue
	// (0 = no bound); one message is always let in, whatever its size.
	MaxQueuedBytes int
	MaxInflight    uint16 // cap on outbound inflight, whatever the client allows
	ReceiveMax     uint16 // inbound QoS 2 awaiting PUBREL
	// Total, when set, is a counter shared by many sessions that follows
	// the topic and payload bytes of their queues (broker-wide overload).
	// Only connected sessions count: an offline session's queue waits for
	// its client, and holding publishers back would not drain it.
	Total *atomic.Int64
}

// Overflow is what a connected session does with a QoS 1/2 delivery that
// finds its queue full.
type Overflow byte

const (
	// Hold keeps it past the bound: the broker holds back the publisher
	// instead (push back), so a client that keeps reading loses nothing.
	// Each held publisher adds a bounded number (its held
	// acknowledgements) past the bound. A delivery from a source that
	// cannot be held (other nodes, wills, the API; Delivery.Held false)
	// that finds the queue past HardLimit times its bound is dropped,
	// counted in DroppedOverflow.
	Hold Overflow = iota
	// DropNewest drops the delivery (counted in DroppedPolicy).
	DropNewest
	// DropOldest drops the oldest queued delivery to make room (counted in
	// DroppedPolicy).
	DropOldest
)

// HardLimit is how many times its bounds a held queue may grow with
// deliveries that are not Held; HeldLimit, with Held ones too (a safety
// net: held publishers add a bounded number each, and reaching it takes
// hundreds of them at once).
const (
	HardLimit = 4
	HeldLimit = 64
)

// Link describes the live connection a session is attached to. It is reset on
// every connect.
type Link struct {
	Version       byte
	ReceiveMax    uint16 // client's Receive Maximum: outbound QoS 1/2 window
	MaxPacketSize uint32 // client's Maximum Packet Size, 0 = unlimited
	TopicAliasMax uint16 // client's Topic Alias Maximum for broker->client
}

type outState = byte

// Outbound states, as journaled (the store uses the same numbers).
const (
	StateQueued = 0 // not sent yet
	waitPuback  = 1 // QoS 1 PUBLISH sent
	waitPubrec  = 2 // QoS 2 PUBLISH sent
	waitPubcomp = 3 // PUBREL sent
)

// Journal receives the changes of a session that a durable store must
// record, for the session of clientID. Deliveries are identified by the
// Seq the session gave them. The methods that change a persistent
// session take the journal of the operation they are part of (nil: a
// session nothing records).
type Journal interface {
	// PutOutbound records a delivery; first is true when the session
	// takes the delivery (not a state change of one it holds).
	PutOutbound(clientID string, seq uint64, d *Delivery, packetID uint16, state byte, first bool)
	DeleteOutbound(clientID string, seq uint64, d *Delivery)
	PutInbound(clientID string, packetID uint16)
	DeleteInbound(clientID string, packetID uint16)
	// PutTaken records the name of a message a persistent session took,
	// its n-th, in slot (n-1) mod RememberMax of a ring (Taken).
	PutTaken(clientID string, slot uint16, o Origin, n uint64)
}

type inflight struct {
	id     uint16
	d      Delivery
	state  outState
	unsent bool // to be sent again on this connection when the window allows
}

// Stats counts what a session had to drop.
type Stats struct {
	DroppedQueueFull uint64 // offline queue full
	DroppedExpired   uint64 // message expiry passed before delivery
	DroppedTooLarge  uint64 // larger than the client's Maximum Packet Size
	DroppedPolicy    uint64 // dropped by a slow-consumer policy (drop_newest, drop_oldest)
	DroppedOverflow  uint64 // held queue past HardLimit times its bound
	Conflated        uint64 // queued deliveries replaced by a newer one of their topic
}

// Session is one client's state. It is not safe for concurrent use; the
// broker serialises calls with its own lock.
type Session struct {
	ClientID string
	// ExpiryInterval is in seconds: 0 ends the session with the connection,
	// NeverExpire keeps it forever.
	ExpiryInterval uint32

	// lim is interned: the sessions of a broker share one copy of their
	// limits (all but those SetQueueLimits gave others), a handle of 8
	// bytes here rather than 40 (TestNewSessionBudget).
	lim    unique.Handle[Limits]
	link   *Link // nil while offline
	nextID uint16
	// Overflow is what a full queue does while the session is connected;
	// an offline session's full queue always drops the newest. (Here, in
	// nextID's padding: Session stays in its size class, see
	// TestNewSessionBudget.)
	Overflow Overflow

	out     []*inflight // in send order
	unsent  int         // entries of out not yet sent on this connection
	queue   []Delivery  // waiting for quota or for the client to come back
	qbytes  int         // topic and payload bytes in queue
	obytes  int         // topic and payload bytes in out
	aliases map[string]uint16
	// latest maps a topic to the Seq of its queued latest-value delivery,
	// for conflation; nil until one is queued.
	latest map[string]uint64

	// inQoS2 are the inbound QoS 2 IDs received, PUBREL not yet, with
	// the name (origin) the broker gave the message, if it did; nil until
	// the first (most sessions never receive QoS 2).
	inQoS2 map[uint16]Origin
	// restoredIn are the inbound IDs loaded from a store, not yet seen
	// again on this broker run.
	restoredIn map[uint16]struct{}

	// mem is what the session remembers of the messages it took; nil
	// until a persistent session takes one with an origin (most never do).
	mem *memory

	nextSeq  uint64
	accepted uint64 // Seq of the delivery the last Deliver kept, 0 if none

	Stats Stats
}

// New returns an empty, offline session.
func New(clientID string, lim Limits) *Session {
	if lim.MaxInflight == 0 {
		lim.MaxInflight = 65535
	}
	if lim.ReceiveMax == 0 {
		lim.ReceiveMax = 65535
	}
	return &Session{
		ClientID: clientID,
		lim:      unique.Make(lim),
	}
}

// Online reports whether a connection is attached.
func (s *Session) Online() bool { return s.link != nil }

// Version is the protocol level of the attached connection (0 offline).
func (s *Session) Version() byte {
	if s.link == nil {
		return 0
	}
	return s.link.Version
}

// Attach binds a new connection and returns what must be sent first: every
// unacknowledged PUBLISH again with DUP set, and PUBREL for those past PUBREC
// [MQTT-4.4.0-1], then queued messages as the window allows.
func (s *Session) Attach(j Journal, l Link, now time.Time) []packet.Packet {
	if s.lim.Value().Total != nil && s.link == nil {
		s.lim.Value().Total.Add(int64(s.qbytes))
	}
	s.link = &l
	s.aliases = nil
	// Everything inflight is sent again, oldest first, as the new
	// connection's Receive Maximum allows [MQTT-4.4.0-1, 3.3.4-7].
	for _, f := range s.out {
		f.unsent = true
	}
	s.unsent = len(s.out)
	return s.fill(j, nil, now)
}

// resend sends inflight entries again while the window allows: PUBREL for
// those past PUBREC, else the PUBLISH with DUP set, whatever its expiry (the
// client may hold its packet ID).
func (s *Session) resend(j Journal, pkts []packet.Packet, now time.Time) []packet.Packet {
	for i := 0; i < len(s.out) && s.unsent > 0 && s.hasQuota(); i++ {
		f := s.out[i]
		if !f.unsent {
			continue
		}
		f.unsent = false
		s.unsent--
		if f.state == waitPubcomp {
			pkts = append(pkts, &packet.Ack{Kind: packet.PUBREL, PacketID: f.id})
			continue
		}
		p, ok := s.publish(f.d, f.id, now)
		if !ok {
			s.remove(j, i) // too large for this connection: dropped and counted
			i--
			continue
		}
		p.Dup = true
		pkts = append(pkts, p)
	}
	return pkts
}

// Detach marks the session offline; inflight and queued messages stay.
func (s *Session) Detach() {
	if s.lim.Value().Total != nil && s.link != nil {
		s.lim.Value().Total.Add(-int64(s.qbytes))
	}
	s.link = nil
	s.aliases = nil
}

// Deliver hands the session a message. It returns the PUBLISH to send now,
// or nil when the session is offline, the window is full (the delivery is
// queued) or the message was dropped.
func (s *Session) Deliver(j Journal, d Delivery, now time.Time) packet.Packet {
	s.accepted = 0
	if d.Msg.Expired(now) {
		s.Stats.DroppedExpired++
		return nil
	}
	if d.QoS == 0 {
		// QoS 0 is not subject to the receive maximum and is not kept for an
		// offline client.
		if s.link == nil {
			return nil
		}
		p, ok := s.publish(d, 0, now)
		if !ok {
			return nil
		}
		return p
	}
	if s.link == nil || len(s.queue) > 0 || s.unsent > 0 || !s.hasQuota() {
		s.enqueue(j, d)
		return nil
	}
	return s.send(j, d, now)
}

func (s *Session) enqueue(j Journal, d Delivery) {
	if d.Latest && s.conflate(j, d) {
		return
	}
	if s.over(0, d.size()) {
		switch {
		case s.link == nil || s.Overflow == DropNewest:
			// Offline (or by policy): the newest message is dropped so that
			// what was queued first keeps its order and is delivered first.
			if s.link == nil {
				s.Stats.DroppedQueueFull++
			} else {
				s.Stats.DroppedPolicy++
			}
			return
		case s.Overflow == DropOldest:
			for len(s.queue) > 0 && s.over(0, d.size()) {
				old := s.queue[0]
				s.dequeue(1)
				s.forget(j, &old)
				s.Stats.DroppedPolicy++
			}
		case s.over(HardLimit-1, d.size()) && (!d.Held || s.over(HeldLimit-1, d.size())):
			s.Stats.DroppedOverflow++
			return
		}
	}
	s.number(j, &d)
	s.queue = append(s.queue, d)
	s.addQ(d.size())
	if d.Latest {
		if s.latest == nil {
			s.latest = make(map[string]uint64)
		}
		s.latest[d.Msg.Topic] = d.Seq
	}
	if j != nil {
		j.PutOutbound(s.ClientID, d.Seq, &d, 0, StateQueued, true)
	}
}

// over reports whether a delivery of size bytes would take the queue past
// its bounds plus extra times them (one is always let in, whatever its
// size).
func (s *Session) over(extra, size int) bool {
	n := s.lim.Value().MaxQueued
	if extra > 0 {
		n = max(n, 1) // a bound of 0 still has a hard limit above it
	}
	if len(s.queue) >= n*(1+extra) {
		return true
	}
	b := s.lim.Value().MaxQueuedBytes * (1 + extra)
	return b > 0 && s.qbytes > 0 && s.qbytes+size > b
}

// Overflows reports whether a QoS 1/2 delivery of m that is not Held
// would be dropped now, past the hard limit of a connected session's
// queue (DroppedOverflow): a caller that can keep it elsewhere (a relayed
// message, in its stream) offers it again later instead.
func (s *Session) Overflows(m *Message) bool {
	if s.link == nil || s.Overflow != Hold || len(s.queue) == 0 {
		return false
	}
	d := Delivery{Msg: m}
	return s.over(HardLimit-1, d.size())
}

// Full reports whether a connected session's queue is at its bound: the
// broker then holds back the publishers that feed it.
func (s *Session) Full() bool {
	// An empty queue is never full, whatever its bound (0 included): what
	// the window cannot take waits in it, and it has room once drained.
	return s.link != nil && len(s.queue) > 0 &&
		(len(s.queue) >= s.lim.Value().MaxQueued || s.lim.Value().MaxQueuedBytes > 0 && s.qbytes >= s.lim.Value().MaxQueuedBytes)
}

// conflate replaces the queued delivery of d's topic, if there is one, by
// d: a latest-value subscriber that is behind gets the newest reading of
// each topic, with nothing else dropped. It reports whether it did.
func (s *Session) conflate(j Journal, d Delivery) bool {
	seq, ok := s.latest[d.Msg.Topic]
	if !ok {
		return false
	}
	i := s.queueIndex(seq)
	if i < 0 {
		delete(s.latest, d.Msg.Topic)
		return false
	}
	old := &s.queue[i]
	if old.QoS != d.QoS || old.Group != d.Group {
		return false
	}
	s.forget(j, old)
	s.addQ(d.size() - old.size())
	d.Seq = 0
	s.number(j, &d)
	*old = d
	s.latest[d.Msg.Topic] = d.Seq
	s.Stats.Conflated++
	if j != nil {
		j.PutOutbound(s.ClientID, d.Seq, old, 0, StateQueued, true)
	}
	return true
}

// queueIndex finds a queued delivery by Seq: the queue is in ascending Seq
// order but for the few requeued at its head.
func (s *Session) queueIndex(seq uint64) int {
	i := sort.Search(len(s.queue), func(i int) bool { return s.queue[i].Seq >= seq })
	if i < len(s.queue) && s.queue[i].Seq == seq {
		return i
	}
	for i := range s.queue {
		if s.queue[i].Seq == seq {
			return i
		}
	}
	return -1
}

// dequeue removes the first n queued deliveries.
func (s *Session) dequeue(n int) {
	for i := range n {
		d := &s.queue[i]
		s.addQ(-d.size())
		if d.Latest && s.latest[d.Msg.Topic] == d.Seq {
			delete(s.latest, d.Msg.Topic)
		}
	}
	clear(s.queue[:n])
	s.queue = s.queue[n:]
}

// addQ changes the queued bytes, and the shared total with them while
// connected.
func (s *Session) addQ(n int) {
	s.qbytes += n
	if s.lim.Value().Total != nil && s.link != nil {
		s.lim.Value().Total.Add(int64(n))
	}
}

// Discard forgets the queue: the session has ended and is dropped whole.
func (s *Session) Discard() {
	if s.lim.Value().Total != nil && s.link != nil {
		s.lim.Value().Total.Add(-int64(s.qbytes))
	}
	s.qbytes = 0
	s.queue = nil
	s.latest = nil
}

// number gives a delivery its sequence number, the order it keeps in the
// store.
func (s *Session) number(j Journal, d *Delivery) {
	if d.Seq == 0 {
		s.nextSeq++
		d.Seq = s.nextSeq
		s.accepted = d.Seq
		s.remember(d.Msg.Origin, j)
	}
}

// Accepted returns the Seq of the delivery the last Deliver kept (queued or
// sent at QoS 1/2), 0 if it kept none.
func (s *Session) Accepted() uint64 { return s.accepted }

// Revoke forgets a delivery whose operation failed (its store commit): it
// is removed from the window or the queue without being journaled, as if it
// had never been delivered. Its PUBLISH, held behind the failed commit, is
// never written.
func (s *Session) Revoke(seq uint64) {
	for i, f := range s.out {
		if f.d.Seq == seq {
			if f.unsent {
				s.unsent--
			}
			s.obytes -= f.d.size()
			copy(s.out[i:], s.out[i+1:])
			s.out[len(s.out)-1] = nil
			s.out = s.out[:len(s.out)-1]
			return
		}
	}
	if i := s.queueIndex(seq); i >= 0 {
		s.removeQueued(i)
	}
}

// removeQueued takes the queued delivery at i out of the queue.
func (s *Session) removeQueued(i int) {
	d := &s.queue[i]
	s.addQ(-d.size())
	if d.Latest && s.latest[d.Msg.Topic] == d.Seq {
		delete(s.latest, d.Msg.Topic)
	}
	copy(s.queue[i:], s.queue[i+1:])
	s.queue[len(s.queue)-1] = Delivery{}
	s.queue = s.queue[:len(s.queue)-1]
}

func (s *Session) forget(j Journal, d *Delivery) {
	if j != nil && d.Seq != 0 {
		j.DeleteOutbound(s.ClientID, d.Seq, d)
	}
}

func (s *Session) hasQuota() bool {
	w := int(s.lim.Value().MaxInflight)
	if s.link != nil && s.link.ReceiveMax != 0 && int(s.link.ReceiveMax) < w {
		w = int(s.link.ReceiveMax)
	}
	if s.lim.Value().MaxQueuedBytes > 0 && s.obytes >= s.lim.Value().MaxQueuedBytes {
		// The window is bounded by bytes as the queue is, so a large
		// max_inflight cannot make one stalled subscriber hold more than
		// the queue and the window's MaxQueuedBytes each. out is not empty
		// here, so an acknowledgement will free room.
		return false
	}
	return len(s.out)-s.unsent < w
}

// send assigns a packet ID, records the inflight state and builds the PUBLISH.
func (s *Session) send(j Journal, d Delivery, now time.Time) packet.Packet {
	id := s.allocID()
	p, ok := s.publish(d, id, now)
	if !ok {
		s.forget(j, &d)
		return nil
	}
	st := byte(waitPuback)
	if d.QoS == 2 {
		st = waitPubrec
	}
	first := d.Seq == 0
	s.number(j, &d)
	s.out = append(s.out, &inflight{id: id, d: d, state: st})
	s.obytes += d.size()
	if j != nil {
		j.PutOutbound(s.ClientID, d.Seq, &d, id, st, first)
	}
	return p
}

// allocID returns a packet ID not in use by an outbound flow [MQTT-2.2.1-3].
// The window is far below 65535, so the loop ends quickly.
func (s *Session) allocID() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if s.find(s.nextID) < 0 {
			return s.nextID
		}
	}
}

func (s *Session) find(id uint16) int {
	for i, f := range s.out {
		if f.id == id {
			return i
		}
	}
	return -1
}

// publish builds the PUBLISH for a delivery on the current link. It returns
// false when the message cannot be sent to this client at all.
func (s *Session) publish(d Delivery, id uint16, now time.Time) (*Outgoing, bool) {
	m := d.Msg
	o := outgoingFor(m)
	m.Ref() // dropped by o.Release
	o.Msg, o.QoS, o.Retain, o.PacketID, o.Latest, o.Held = m, d.QoS, d.Retain, id, d.Latest, d.Held
	v := s.link.Version
	if v == packet.V5 {
		if !m.Expiry.IsZero() {
			// Forward the remaining lifetime, not the original [MQTT-3.3.2-6].
			left := uint32(max(1, (m.Expiry.Sub(now)+time.Second-1)/time.Second))
			o.ExpiryLeft = &left
		}
		o.SubIDs = d.SubIDs
		newAlias := s.alias(o)
		if max := s.link.MaxPacketSize; max > 0 {
			// [MQTT-3.1.2-24] never send a packet above the client's limit;
			// the message is dropped for this client as if delivered.
			if n, err := o.Size(v); err != nil || uint64(n) > uint64(max) {
				if newAlias {
					delete(s.aliases, m.Topic) // the client never learned it
				}
				s.Stats.DroppedTooLarge++
				o.Release()
				return nil, false
			}
		}
	}
	return o, true
}

// alias replaces the topic with a topic alias when the client allows them. An
// alias is assigned to the first topics seen, and never reassigned, so the
// mapping is stable for the connection.
// It reports whether this delivery establishes a new alias.
func (s *Session) alias(o *Outgoing) bool {
	if s.link.TopicAliasMax == 0 {
		return false
	}
	topic := o.Msg.Topic
	if a, ok := s.aliases[topic]; ok {
		o.Alias, o.AliasOnly = a, true
		return false
	}
	if len(s.aliases) >= int(s.link.TopicAliasMax) {
		return false
	}
	if s.aliases == nil {
		s.aliases = make(map[string]uint16)
	}
	a := uint16(len(s.aliases) + 1)
	s.aliases[topic] = a
	o.Alias = a
	return true
}

// fill moves queued deliveries into the window while there is quota.
func (s *Session) fill(j Journal, pkts []packet.Packet, now time.Time) []packet.Packet {
	if s.link == nil {
		return pkts
	}
	pkts = s.resend(j, pkts, now)
	if s.unsent > 0 {
		return pkts // older messages first
	}
	n := 0
	for n < len(s.queue) && s.hasQuota() {
		d := s.queue[n]
		n++
		s.addQ(-d.size())
		if d.Latest && s.latest[d.Msg.Topic] == d.Seq {
			delete(s.latest, d.Msg.Topic)
		}
		if d.Msg.Expired(now) {
			s.Stats.DroppedExpired++
			s.forget(j, &d)
			continue
		}
		if p := s.send(j, d, now); p != nil {
			pkts = append(pkts, p)
		}
	}
	if n > 0 {
		clear(s.queue[:n])
		s.queue = s.queue[n:]
	}
	return pkts
}

// Puback completes an outbound QoS 1 flow and returns what the freed quota
// lets through. ok is false for an unknown ID.
func (s *Session) Puback(j Journal, id uint16, now time.Time) (next []packet.Packet, ok bool) {
	i := s.find(id)
	if i < 0 || s.out[i].state != waitPuback {
		return nil, false
	}
	s.remove(j, i)
	return s.fill(j, nil, now), true
}

// Pubrec moves an outbound QoS 2 flow to PUBREL. A PUBREC with an error code
// ends the flow [MQTT-4.3.3-4]. It returns the PUBREL to send (nil if none)
// and what the freed quota lets through.
func (s *Session) Pubrec(j Journal, id uint16, code packet.ReasonCode, now time.Time) (rel packet.Packet, next []packet.Packet, ok bool) {
	i := s.find(id)
	if i < 0 {
		// Unknown ID: answer with PUBREL 0x92 so the client can finish.
		return &packet.Ack{Kind: packet.PUBREL, PacketID: id, ReasonCode: packet.PacketIDNotFound}, nil, false
	}
	f := s.out[i]
	if f.state == waitPuback {
		return nil, nil, false
	}
	if code >= 0x80 {
		s.remove(j, i)
		return nil, s.fill(j, nil, now), true
	}
	f.state = waitPubcomp
	if j != nil {
		j.PutOutbound(s.ClientID, f.d.Seq, &f.d, f.id, waitPubcomp, false)
	}
	return &packet.Ack{Kind: packet.PUBREL, PacketID: id}, nil, true
}

// Pubcomp completes an outbound QoS 2 flow.
func (s *Session) Pubcomp(j Journal, id uint16, now time.Time) (next []packet.Packet, ok bool) {
	i := s.find(id)
	if i < 0 || s.out[i].state != waitPubcomp {
		return nil, false
	}
	s.remove(j, i)
	return s.fill(j, nil, now), true
}

func (s *Session) remove(j Journal, i int) {
	if s.out[i].unsent {
		s.unsent--
	}
	s.obytes -= s.out[i].d.size()
	s.forget(j, &s.out[i].d)
	copy(s.out[i:], s.out[i+1:])
	s.out[len(s.out)-1] = nil
	s.out = s.out[:len(s.out)-1]
}

// ReceiveQoS2 records an inbound QoS 2 PUBLISH. first is false when the ID is
// already awaiting PUBREL: the message was delivered before and must not be
// again [MQTT-4.3.3-9].
//
// dup is the PUBLISH's DUP flag. A sender must set it when it sends a
// PUBLISH again [MQTT-3.3.1-1], so an ID we hold that arrives without it
// starts a new message: our record is stale (a PUBREL whose store write was
// lost with a crash under a relaxed sync policy) and is replaced.
func (s *Session) ReceiveQoS2(j Journal, id uint16, dup bool) (first bool, err error) {
	if _, held := s.inQoS2[id]; held {
		if dup {
			return false, nil
		}
		delete(s.inQoS2, id)
		if j != nil {
			j.DeleteInbound(s.ClientID, id)
		}
		delete(s.restoredIn, id)
	}
	// 3.x clients are never told a receive maximum, so only v5 is held to it.
	if len(s.inQoS2) >= int(s.lim.Value().ReceiveMax) && len(s.restoredIn) > 0 {
		// IDs restored from a store may be stale (see above); one gives
		// way rather than wedge the client at its receive maximum.
		for old := range s.restoredIn {
			delete(s.restoredIn, old)
			delete(s.inQoS2, old)
			if j != nil {
				j.DeleteInbound(s.ClientID, old)
			}
			break
		}
	}
	if s.link != nil && s.link.Version == packet.V5 && len(s.inQoS2) >= int(s.lim.Value().ReceiveMax) {
		return false, ErrReceiveMaximum
	}
	s.holdInbound(id)
	if j != nil {
		j.PutInbound(s.ClientID, id)
	}
	return true, nil
}

// Release handles an inbound PUBREL; ok is false for an unknown ID.
func (s *Session) Release(j Journal, id uint16) (ok bool) {
	if _, ok = s.inQoS2[id]; ok {
		delete(s.inQoS2, id)
		delete(s.restoredIn, id)
		if j != nil {
			j.DeleteInbound(s.ClientID, id)
		}
	}
	return ok
}

// Requeue puts a delivery back at the head of the queue, ahead of newer
// ones, whatever the queue bound: it was accepted before them.
func (s *Session) Requeue(j Journal, d Delivery) {
	s.number(j, &d)
	s.queue = append(s.queue, Delivery{})
	copy(s.queue[1:], s.queue)
	s.queue[0] = d
	s.addQ(d.size())
	if j != nil {
		j.PutOutbound(s.ClientID, d.Seq, &d, 0, StateQueued, true)
	}
}

// Restore rebuilds outbound state read from a store, in ascending seq
// order: entries with a packet ID are inflight, the others queued.
func (s *Session) Restore(d Delivery, packetID uint16, state byte) {
	s.nextSeq = max(s.nextSeq, d.Seq)
	s.remember(d.Msg.Origin, nil)
	if packetID == 0 {
		// Kept whatever the bounds: these were accepted before the restart.
		s.queue = append(s.queue, d)
		s.addQ(d.size())
		return
	}
	s.out = append(s.out, &inflight{id: packetID, d: d, state: state})
	s.obytes += d.size()
}

// holdInbound records inbound QoS 2 packet ID id, PUBREL not received.
func (s *Session) holdInbound(id uint16) {
	if s.inQoS2 == nil {
		s.inQoS2 = make(map[uint16]Origin)
	}
	s.inQoS2[id] = Origin{}
}

// RestoreInbound records an inbound QoS 2 packet ID read from a store.
func (s *Session) RestoreInbound(id uint16) {
	s.holdInbound(id)
	if s.restoredIn == nil {
		s.restoredIn = make(map[uint16]struct{})
	}
	s.restoredIn[id] = struct{}{}
}

// NameInbound records the name the broker gave the message received
// under inbound QoS 2 packet ID id (or that another node gave it, for an
// ID restored from there).
func (s *Session) NameInbound(id uint16, o Origin) {
	if _, ok := s.inQoS2[id]; ok {
		s.inQoS2[id] = o
	}
}

// InboundOrigin is the name of the message received under inbound QoS 2
// packet ID id, zero if unknown.
func (s *Session) InboundOrigin(id uint16) Origin { return s.inQoS2[id] }

// ReplayOrigin is the name TakeReplay would route a resend under
// inbound packet ID id with (restored from elsewhere with its name and
// not seen again since), zero otherwise. A session handed over carries
// it: the node it came from never routed that message.
func (s *Session) ReplayOrigin(id uint16) Origin {
	if _, ok := s.restoredIn[id]; !ok {
		return Origin{}
	}
	return s.inQoS2[id]
}

// TakeReplay reports, for a PUBLISH resent under a held inbound packet ID,
// whether the ID was restored from elsewhere with the message's name and
// not seen again since: the node that received the message first may
// not have routed it everywhere before it was lost, so the broker routes
// it again under that name (sessions that took it skip it). It reports
// true once per restored ID.
func (s *Session) TakeReplay(id uint16) (Origin, bool) {
	if _, ok := s.restoredIn[id]; !ok {
		return Origin{}, false
	}
	o := s.inQoS2[id]
	if o.IsZero() {
		return o, false
	}
	delete(s.restoredIn, id)
	return o, true
}

// Pending calls fn for every outbound delivery (inflight, then queued).
func (s *Session) Pending(fn func(d *Delivery)) {
	for _, f := range s.out {
		fn(&f.d)
	}
	for i := range s.queue {
		fn(&s.queue[i])
	}
}

// Inflight returns the number of outbound QoS 1/2 messages awaiting
// acknowledgement.
func (s *Session) Inflight() int { return len(s.out) }

// Queued returns the number of deliveries waiting to be sent.
func (s *Session) Queued() int { return len(s.queue) }

// QueuedBytes returns the topic and payload bytes of the deliveries waiting
// to be sent.
func (s *Session) QueuedBytes() int { return s.qbytes }

// TakeShared removes and returns the deliveries that came through a $share
// group and were not yet acknowledged past PUBREC, so the broker can hand
// them to another member of the group.
func (s *Session) TakeShared(j Journal) []Delivery {
	var ds []Delivery
	kept := s.out[:0]
	for _, f := range s.out {
		if f.d.Group != "" && f.state != waitPubcomp {
			ds = append(ds, f.d)
			if f.unsent {
				s.unsent--
			}
			s.obytes -= f.d.size()
			s.forget(j, &f.d)
			continue
		}
		kept = append(kept, f)
	}
	clear(s.out[len(kept):])
	s.out = kept
	q := s.queue[:0]
	for _, d := range s.queue {
		if d.Group != "" {
			ds = append(ds, d)
			s.addQ(-d.size())
			if d.Latest && s.latest[d.Msg.Topic] == d.Seq {
				delete(s.latest, d.Msg.Topic)
			}
			s.forget(j, &d)
			continue
		}
		q = append(q, d)
	}
	clear(s.queue[len(q):])
	s.queue = q
	return ds
}

// Export calls fn for every outbound delivery in order (inflight with its
// packet ID and state, then queued with packet ID 0) and returns the inbound
// QoS 2 packet IDs still awaiting PUBREL: what another broker node needs to
// continue the session.
func (s *Session) Export(fn func(d *Delivery, packetID uint16, state byte)) (inbound []uint16) {
	for _, f := range s.out {
		fn(&f.d, f.id, f.state)
	}
	for i := range s.queue {
		fn(&s.queue[i], 0, StateQueued)
	}
	for id := range s.inQoS2 {
		inbound = append(inbound, id)
	}
	return inbound
}
