package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

// wireVersion is the first byte of every encoded message; a node refuses
// versions it does not know rather than misreading them. Version 2 adds
// the message's name (session.Message.Origin) when it is not the header
// (a message routed again under the name another node gave it); every
// other message is written as version 1, which names it by its header.
const (
	wireVersion      = 1
	wireVersionNamed = 2
)

// header says where a message came from: the sending node's instance (new
// on every start) and its sequence number there, for deduplication.
type header struct {
	instance uint64
	seq      uint64
}

// encodeMessage writes m for the backplane: version, origin, absolute
// expiry, [name,] publisher, then the message as an MQTT 5 PUBLISH (the
// codec every node already has and fuzzes).
func encodeMessage(dst []byte, h header, m *session.Message) ([]byte, error) {
	return encodeNamed(dst, h, m.Origin, m)
}

// encodeNamed is encodeMessage naming the message o (zero: by its header).
func encodeNamed(dst []byte, h header, o session.Origin, m *session.Message) ([]byte, error) {
	named := !o.IsZero() && o != (session.Origin{Instance: h.instance, Seq: h.seq})
	if named {
		dst = append(dst, wireVersionNamed)
	} else {
		dst = append(dst, wireVersion)
	}
	dst = binary.BigEndian.AppendUint64(dst, h.instance)
	dst = binary.BigEndian.AppendUint64(dst, h.seq)
	var exp int64
	if !m.Expiry.IsZero() {
		exp = m.Expiry.UnixNano()
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(exp))
	if named {
		dst = binary.BigEndian.AppendUint64(dst, o.Instance)
		dst = binary.BigEndian.AppendUint64(dst, o.Seq)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Publisher)))
	dst = append(dst, m.Publisher...)
	// A value on the stack (AppendPublish takes the concrete type): no
	// allocation per message.
	p := packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: m.Topic, Properties: m.Props, Payload: m.Payload}
	p.Properties.MessageExpiry = nil
	if p.QoS > 0 {
		p.PacketID = 1 // required on the wire; meaningless here
	}
	return packet.AppendPublish(dst, &p, packet.V5)
}

var errWire = errors.New("cluster: bad message encoding")

// decodeMessage reads what encodeMessage wrote. Peers are trusted, but a
// bad or foreign message is an error, never a panic.
func decodeMessage(b []byte) (header, *session.Message, error) {
	return decodeCached(b, nil)
}

// wireNames remembers the topic and publisher of the message decoded before,
// so that a run of messages with the same ones (a batch, batch.go) shares
// their strings rather than allocating them again.
type wireNames struct {
	topic, publisher string
}

// decodeCached is decodeMessage with c, when not nil, holding the names
// of the message decoded before.
func decodeCached(b []byte, c *wireNames) (header, *session.Message, error) {
	var h header
	if len(b) < 25 || (b[0] != wireVersion && b[0] != wireVersionNamed) {
		return h, nil, fmt.Errorf("%w: short or unknown version", errWire)
	}
	h.instance = binary.BigEndian.Uint64(b[1:])
	h.seq = binary.BigEndian.Uint64(b[9:])
	exp := int64(binary.BigEndian.Uint64(b[17:]))
	o := session.Origin{Instance: h.instance, Seq: h.seq}
	named := b[0] == wireVersionNamed
	b = b[25:]
	if named {
		if len(b) < 16 {
			return h, nil, fmt.Errorf("%w: name", errWire)
		}
		o = session.Origin{Instance: binary.BigEndian.Uint64(b), Seq: binary.BigEndian.Uint64(b[8:])}
		b = b[16:]
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return h, nil, fmt.Errorf("%w: publisher", errWire)
	}
	var publisher string
	if pb := b[k : k+int(n)]; c != nil && c.publisher == string(pb) { // compared without a copy
		publisher = c.publisher
	} else {
		publisher = string(pb)
		if c != nil {
			c.publisher = publisher
		}
	}
	b = b[k+int(n):]
	fh, hdr, err := fixedHeader(b)
	if err != nil {
		return h, nil, fmt.Errorf("%w: %v", errWire, err)
	}
	if fh.Type != packet.PUBLISH || fh.Remaining != len(b)-hdr {
		return h, nil, fmt.Errorf("%w: not one PUBLISH", errWire)
	}
	var p packet.Publish
	var last *string
	var before string
	if c != nil {
		last, before = &c.topic, c.topic
	}
	if err := packet.DecodePublish(&p, fh, b[hdr:], packet.V5, last); err != nil {
		return h, nil, fmt.Errorf("%w: %v", errWire, err)
	}
	// A topic seen just before was checked then.
	if (c == nil || p.Topic != before || before == "") && topic.ValidateName(p.Topic) != nil {
		if c != nil {
			c.topic = ""
		}
		return h, nil, fmt.Errorf("%w: topic", errWire)
	}
	m := &session.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Props: p.Properties, Publisher: publisher,
		Origin: o}
	m.Props.MessageExpiry = nil
	if exp != 0 {
		m.Expiry = time.Unix(0, exp)
	}
	return h, m, nil
}

// fixedHeader reads a packet's fixed header from the start of b, and how
// many bytes it took (packet.ReadFixedHeader would need an io.ByteReader,
// one allocation per message). DecodePublish checks the flags.
func fixedHeader(b []byte) (packet.FixedHeader, int, error) {
	if len(b) < 2 {
		return packet.FixedHeader{}, 0, io.ErrUnexpectedEOF
	}
	fh := packet.FixedHeader{Type: packet.Type(b[0] >> 4), Flags: b[0] & 0x0f}
	mult := 1
	for i := 1; i <= 4 && i < len(b); i++ {
		fh.Remaining += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return fh, i + 1, nil
		}
		mult <<= 7
	}
	return packet.FixedHeader{}, 0, errors.New("bad remaining length")
}
