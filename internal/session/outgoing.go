package session

import (
	"sync"
	"sync/atomic"

	"github.com/starling-mqtt/starling/internal/bufpool"
	"github.com/starling-mqtt/starling/internal/packet"
)

// Outgoing is one PUBLISH on its way to one client. It references the shared
// message instead of copying it; the connection's writer encodes it with
// AppendPacket, which copies a per-message encoding made once per wire form
// and patches in this delivery's flags and packet ID.
type Outgoing struct {
	Msg        *Message
	QoS        byte
	Retain     bool
	Dup        bool
	PacketID   uint16
	SubIDs     []int
	Alias      uint16  // topic alias, 0 for none
	AliasOnly  bool    // topic omitted, alias set earlier on this connection
	ExpiryLeft *uint32 // remaining message expiry, nil for none
	Latest     bool    // latest-value delivery: a newer one of the topic may replace it
	Held       bool    // from a publisher the broker holds back while the client is behind

	embedded bool // the Message's own first: not from outPool
}

var outPool = sync.Pool{New: func() any { return new(Outgoing) }}

func newOutgoing() *Outgoing { return outPool.Get().(*Outgoing) }

// outgoingFor returns an Outgoing for a delivery of m: m's own first one
// for the first delivery of a pooled message, else one from the pool.
// The caller holds a reference to m; deliveries of m may be made on
// several goroutines at once, and only one takes the first.
func outgoingFor(m *Message) *Outgoing {
	if m.pooled && m.firstTaken.CompareAndSwap(false, true) {
		m.first.embedded = true
		return &m.first
	}
	return newOutgoing()
}

// Release returns the value to its pool. The connection's writer calls it
// once the bytes are written or the delivery is dropped; nothing may use o
// after that. The session never keeps an Outgoing, only its Delivery.
func (o *Outgoing) Release() {
	if o.embedded {
		// Part of its message: cleared before the reference goes, since
		// the last one recycles the message, o with it.
		m := o.Msg
		*o = Outgoing{}
		m.Unref()
		return
	}
	if o.Msg != nil {
		o.Msg.Unref()
	}
	*o = Outgoing{}
	outPool.Put(o)
}

// Type implements packet.Packet.
func (o *Outgoing) Type() packet.Type { return packet.PUBLISH }

// QoSLevel lets the connection tell QoS 0 deliveries it may drop. One that
// establishes a topic alias reports 1: dropping it would leave the client
// with alias-only messages for an alias it never learned.
func (o *Outgoing) QoSLevel() byte {
	if o.QoS == 0 && o.Alias != 0 && !o.AliasOnly {
		return 1
	}
	return o.QoS
}

// LatestTopic lets the connection replace a QoS 0 latest-value delivery
// still waiting to be written by a newer one of its topic (conflation).
func (o *Outgoing) LatestTopic() (string, bool) {
	return o.Msg.Topic, o.Latest && o.QoSLevel() == 0
}

// FromHeld tells the connection that the publisher of this delivery is
// held back while the client is behind: its QoS 0 queue keeps it past its
// hard limit (Delivery.Held).
func (o *Outgoing) FromHeld() bool { return o.Held }

// Publish builds the equivalent packet value (tests, and forms that need
// per-delivery properties).
func (o *Outgoing) Publish(v byte) *packet.Publish {
	m := o.Msg
	p := &packet.Publish{Dup: o.Dup, QoS: o.QoS, Retain: o.Retain, Topic: m.Topic, PacketID: o.PacketID, Payload: m.Payload}
	if v == packet.V5 {
		p.Properties = m.Props
		p.Properties.MessageExpiry = o.ExpiryLeft
		if len(o.SubIDs) > 0 {
			p.Properties.SubscriptionIDs = o.SubIDs
		}
		if o.Alias != 0 {
			a := o.Alias
			p.Properties.TopicAlias = &a
			if o.AliasOnly {
				p.Topic = ""
			}
		}
	}
	return p
}

// shared reports whether this delivery's bytes are the message's shared
// encoding plus patched flags and packet ID.
func (o *Outgoing) shared() bool {
	return len(o.SubIDs) == 0 && o.Alias == 0 && o.ExpiryLeft == nil
}

// AppendPacket encodes the PUBLISH for protocol version v onto dst.
func (o *Outgoing) AppendPacket(dst []byte, v byte) ([]byte, error) {
	if !o.shared() {
		return packet.Append(dst, o.Publish(v), v)
	}
	if m := o.Msg; m.pooled && m.refs.Load() == 1 && m.noWire(v, o.QoS > 0) {
		// The only delivery of this message (the publisher and any other
		// delivery have dropped theirs, and nothing new can take one):
		// encoded straight into dst, without a shared encoding that no
		// one else would copy.
		p := packet.Publish{Topic: m.Topic, Payload: m.Payload, QoS: o.QoS, Dup: o.Dup, Retain: o.Retain, PacketID: o.PacketID}
		if v == packet.V5 {
			p.Properties = m.Props
		}
		return packet.AppendPublish(dst, &p, v)
	}
	w, err := o.Msg.wire(v, o.QoS > 0)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, w.b...)
	o.patch(dst[start:], w)
	if w.head {
		dst = append(dst, o.Msg.Payload...)
	}
	return dst, nil
}

// AppendHead is AppendPacket for a writer that can send a payload from
// where it lies: when the payload is at least min bytes it appends the
// PUBLISH without it and returns the payload, to be written right after
// dst's bytes and not modified until then (it belongs to the message,
// which this delivery keeps until released). Otherwise it appends the
// whole packet and returns a nil payload.
func (o *Outgoing) AppendHead(dst []byte, v byte, min int) ([]byte, []byte, error) {
	m := o.Msg
	if len(m.Payload) < min || !o.shared() {
		b, err := o.AppendPacket(dst, v)
		return b, nil, err
	}
	if m.pooled && m.refs.Load() == 1 && m.noWire(v, o.QoS > 0) {
		// The only delivery, as in AppendPacket.
		p := packet.Publish{Topic: m.Topic, Payload: m.Payload, QoS: o.QoS, Dup: o.Dup, Retain: o.Retain, PacketID: o.PacketID}
		if v == packet.V5 {
			p.Properties = m.Props
		}
		b, err := packet.AppendPublishHead(dst, &p, v)
		if err != nil {
			return dst, nil, err
		}
		return b, m.Payload, nil
	}
	w, err := m.wire(v, o.QoS > 0)
	if err != nil {
		return dst, nil, err
	}
	// The shared encoding's head (all of it, or what precedes the payload
	// it ends with) is copied and patched as AppendPacket patches it.
	head := w.b
	if !w.head {
		head = w.b[:len(w.b)-len(m.Payload)]
	}
	start := len(dst)
	dst = append(dst, head...)
	o.patch(dst[start:], w)
	return dst, m.Payload, nil
}

// patch sets a copy of shared encoding w (at least its head) to this
// delivery's flags and packet ID.
func (o *Outgoing) patch(b []byte, w *wireForm) {
	// First byte: type, DUP, QoS, RETAIN [MQTT-2.1.3].
	f := byte(packet.PUBLISH)<<4 | o.QoS<<1
	if o.Dup {
		f |= 0x08
	}
	if o.Retain {
		f |= 0x01
	}
	b[0] = f
	if o.QoS > 0 {
		b[w.idOff] = byte(o.PacketID >> 8)
		b[w.idOff+1] = byte(o.PacketID)
	}
}

// Size is the encoded length for protocol version v.
func (o *Outgoing) Size(v byte) (int, error) {
	if !o.shared() {
		return packet.Size(o.Publish(v), v)
	}
	w, err := o.Msg.wire(v, o.QoS > 0)
	if err != nil {
		return 0, err
	}
	if w.head {
		return len(w.b) + len(o.Msg.Payload), nil
	}
	return len(w.b), nil
}

// wireForm is a message encoded once for one protocol family and QoS class.
type wireForm struct {
	b      []byte
	idOff  int  // offset of the packet ID, for QoS 1/2 forms
	pooled bool // from wirePool: goes back with its pooled message
	// head: b stops before the payload, which deliveries take from the
	// message (payloads of headOnlyPayload bytes or more: not copied once
	// more into a shared encoding, and a pooled encoding stays small).
	head bool
}

// headOnlyPayload is the payload size from which a shared encoding holds
// the packet's head alone. Below it, one copy of the whole packet per
// delivery is cheaper than two appends.
const headOnlyPayload = 4 << 10

// wirePool keeps the encodings of pooled messages, with their buffers.
var wirePool = sync.Pool{New: func() any { return &wireForm{pooled: true} }}

// maxPooledWire bounds the buffer a pooled encoding keeps.
const maxPooledWire = 64 << 10

func putWire(w *wireForm) {
	if !w.pooled || cap(w.b) > maxPooledWire {
		return
	}
	if bufpool.Poison {
		bufpool.PoisonBytes(w.b[:cap(w.b)])
	}
	w.b = w.b[:0]
	wirePool.Put(w)
}

// wireCache holds the message's encodings: [v5][qos>0].
type wireCache [2][2]atomic.Pointer[wireForm]

// wireSlot is the wireCache position of version v's encoding, with or
// without a packet ID.
func wireSlot(v byte, withID bool) (vi, qi int) {
	if v == packet.V5 {
		vi = 1
	}
	if withID {
		qi = 1
	}
	return vi, qi
}

// wire returns (building once) the encoding of m for version v, with a
// placeholder packet ID when withID.
func (m *Message) wire(v byte, withID bool) (*wireForm, error) {
	vi, qi := wireSlot(v, withID)
	slot := &m.enc[vi][qi]
	if w := slot.Load(); w != nil {
		return w, nil
	}
	p := packet.Publish{Topic: m.Topic, Payload: m.Payload}
	if withID {
		p.QoS, p.PacketID = 1, 1
	}
	if v == packet.V5 {
		p.Properties = m.Props
	}
	var w *wireForm
	if m.pooled {
		w = wirePool.Get().(*wireForm)
	} else {
		w = new(wireForm)
	}
	var b []byte
	var err error
	w.head = len(m.Payload) >= headOnlyPayload
	if w.head {
		b, err = packet.AppendPublishHead(w.b[:0], &p, v)
	} else {
		b, err = packet.AppendPublish(w.b[:0], &p, v)
	}
	if err != nil {
		putWire(w)
		return nil, err
	}
	hdr := 2
	for hdr < 5 && b[hdr-1]&0x80 != 0 {
		hdr++ // remaining length continuation bytes
	}
	w.b, w.idOff = b, hdr+2+len(m.Topic)
	if !slot.CompareAndSwap(nil, w) {
		putWire(w) // another writer built it first
	}
	return slot.Load(), nil
}

// MessageSize is the topic and payload bytes of the message this PUBLISH
// carries, what a connection counts against its queued-bytes bound.
func (o *Outgoing) MessageSize() int { return len(o.Msg.Topic) + len(o.Msg.Payload) }

// noWire reports whether m has no shared encoding for version v yet.
func (m *Message) noWire(v byte, withID bool) bool {
	vi, qi := wireSlot(v, withID)
	return m.enc[vi][qi].Load() == nil
}
