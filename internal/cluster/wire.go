package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
	p := &packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: m.Topic, Properties: m.Props, Payload: m.Payload}
	p.Properties.MessageExpiry = nil
	if p.QoS > 0 {
		p.PacketID = 1 // required on the wire; meaningless here
	}
	return packet.Append(dst, p, packet.V5)
}

var errWire = errors.New("cluster: bad message encoding")

// decodeMessage reads what encodeMessage wrote. Peers are trusted, but a
// bad or foreign message is an error, never a panic.
func decodeMessage(b []byte) (header, *session.Message, error) {
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
	publisher := string(b[k : k+int(n)])
	b = b[k+int(n):]
	r := bytes.NewReader(b)
	fh, err := packet.ReadFixedHeader(r)
	if err != nil {
		return h, nil, fmt.Errorf("%w: %v", errWire, err)
	}
	hdr := len(b) - r.Len()
	if fh.Type != packet.PUBLISH || fh.Remaining != len(b)-hdr {
		return h, nil, fmt.Errorf("%w: not one PUBLISH", errWire)
	}
	pk, err := packet.Decode(fh, b[hdr:], packet.V5)
	if err != nil {
		return h, nil, fmt.Errorf("%w: %v", errWire, err)
	}
	p := pk.(*packet.Publish)
	if topic.ValidateName(p.Topic) != nil {
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
