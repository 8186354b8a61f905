package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
)

// Keys: a kind byte, then the fields. A client ID is followed by sep (MQTT
// client IDs never contain U+0000), so one client's keys are the range
// [kind cid 0x00, kind cid 0x01) and "a" never covers "ab". Integers are
// big-endian so key order is numeric order. Kinds sort in Load order.
const (
	kindMeta         byte = 0x00 // kindMeta "format" -> formatMarker
	kindSession      byte = 0x01 // cid sep
	kindMessage      byte = 0x02 // id(8)
	kindSubscription byte = 0x03 // cid sep filter
	kindOutbound     byte = 0x04 // cid sep seq(8)
	kindInbound      byte = 0x05 // cid sep packetID(2)
	kindRetained     byte = 0x06 // topic
	kindTaken        byte = 0x07 // cid sep slot(2)
	kindEnd          byte = 0x08 // first byte after the record kinds

	sep byte = 0x00
)

// formatMarker is the value of the marker key written when a store is
// created. A store written by a later, incompatible layout carries another.
const formatMarker = "starling-store v1"

var markerKey = []byte{kindMeta, 'f', 'o', 'r', 'm', 'a', 't'}

// valueVersion is the first byte of every value this code writes.
const valueVersion byte = 1

func clientKey(kind byte, clientID string, extra int) []byte {
	k := make([]byte, 0, 2+len(clientID)+extra)
	k = append(k, kind)
	k = append(k, clientID...)
	return append(k, sep)
}

func sessionKey(clientID string) []byte { return clientKey(kindSession, clientID, 0) }

func messageKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kindMessage}, id)
}

func subscriptionKey(clientID, filter string) []byte {
	return append(clientKey(kindSubscription, clientID, len(filter)), filter...)
}

func outboundKey(clientID string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(clientKey(kindOutbound, clientID, 8), seq)
}

func inboundKey(clientID string, packetID uint16) []byte {
	return binary.BigEndian.AppendUint16(clientKey(kindInbound, clientID, 2), packetID)
}

func takenKey(clientID string, slot uint16) []byte {
	return binary.BigEndian.AppendUint16(clientKey(kindTaken, clientID, 2), slot)
}

// taken: version, origin instance(8), origin seq(8), n(8).
func encodeTaken(t store.Taken) []byte {
	b := make([]byte, 0, 25)
	b = append(b, valueVersion)
	b = binary.BigEndian.AppendUint64(b, t.Origin.Instance)
	b = binary.BigEndian.AppendUint64(b, t.Origin.Seq)
	return binary.BigEndian.AppendUint64(b, t.N)
}

func decodeTaken(b []byte) (store.Taken, error) {
	if len(b) != 25 || b[0] != valueVersion {
		return store.Taken{}, errors.New("bad taken value")
	}
	return store.Taken{Origin: store.Origin{Instance: binary.BigEndian.Uint64(b[1:]), Seq: binary.BigEndian.Uint64(b[9:])},
		N: binary.BigEndian.Uint64(b[17:])}, nil
}

func retainedKey(topic string) []byte { return append([]byte{kindRetained}, topic...) }

// clientRange is the key range of clientID's records of kind.
func clientRange(kind byte, clientID string) (start, end []byte) {
	start = clientKey(kind, clientID, 0)
	end = append(start[:len(start)-1:len(start)-1], sep+1)
	return start, end
}

// splitClient splits "cid sep rest" (the key without its kind byte).
func splitClient(k []byte) (clientID string, rest []byte, err error) {
	for i, c := range k {
		if c == sep {
			return string(k[:i]), k[i+1:], nil
		}
	}
	return "", nil, errors.New("no client ID separator")
}

// ---- values ----

var errShort = errors.New("truncated value")

type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *dec) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(errShort)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *dec) u16() uint16 {
	if d.err != nil || len(d.b) < 2 {
		d.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

func (d *dec) u32() uint32 {
	if d.err != nil || len(d.b) < 4 {
		d.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) int() int {
	v := d.varint()
	if v < math.MinInt || v > math.MaxInt {
		d.fail(errors.New("integer out of range"))
		return 0
	}
	return int(v)
}

// bytes returns a copy of a length-prefixed field; nil when empty.
func (d *dec) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(errShort)
		return nil
	}
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	copy(b, d.b)
	d.b = d.b[n:]
	return b
}

func (d *dec) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail(errShort)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads a count of items each at least min bytes long, refusing a
// count the rest of the value cannot hold.
func (d *dec) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.fail(errors.New("count larger than the value"))
		return 0
	}
	return int(n)
}

func (d *dec) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
		sec := d.varint()
		nsec := d.uvarint()
		if nsec >= 1e9 {
			d.fail(errors.New("bad nanoseconds"))
			return time.Time{}
		}
		return time.Unix(sec, int64(nsec)).UTC()
	default:
		d.fail(errors.New("bad time flag"))
		return time.Time{}
	}
}

// version checks the leading format version byte.
func (d *dec) version(what string) {
	v := d.byte()
	if d.err == nil && v != valueVersion {
		d.fail(fmt.Errorf("%s value has format version %d, this Starling reads version %d (written by a newer Starling?)", what, v, valueVersion))
	}
}

func (d *dec) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return fmt.Errorf("decode %s: %w", what, d.err)
	}
	return nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendStr(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func boolBit(v bool, bit byte) byte {
	if v {
		return bit
	}
	return 0
}

// Property presence bits. Only the message properties are stored (see
// store.Message); the others are dropped.
const (
	propPayloadFormat byte = 1 << iota
	propContentType
	propResponseTopic
	propCorrelationData
	propUserProperties
	propAll = propPayloadFormat | propContentType | propResponseTopic | propCorrelationData | propUserProperties
)

func appendProps(b []byte, p *packet.Properties) []byte {
	var mask byte
	if p.PayloadFormat != nil {
		mask |= propPayloadFormat
	}
	mask |= boolBit(p.ContentType != "", propContentType)
	mask |= boolBit(p.ResponseTopic != "", propResponseTopic)
	mask |= boolBit(len(p.CorrelationData) > 0, propCorrelationData)
	mask |= boolBit(len(p.UserProperties) > 0, propUserProperties)
	b = append(b, mask)
	if p.PayloadFormat != nil {
		b = append(b, *p.PayloadFormat)
	}
	if mask&propContentType != 0 {
		b = appendStr(b, p.ContentType)
	}
	if mask&propResponseTopic != 0 {
		b = appendStr(b, p.ResponseTopic)
	}
	if mask&propCorrelationData != 0 {
		b = appendBytes(b, p.CorrelationData)
	}
	if mask&propUserProperties != 0 {
		b = binary.AppendUvarint(b, uint64(len(p.UserProperties)))
		for _, u := range p.UserProperties {
			b = appendStr(b, u.Key)
			b = appendStr(b, u.Value)
		}
	}
	return b
}

func (d *dec) props() packet.Properties {
	var p packet.Properties
	mask := d.byte()
	if mask&^propAll != 0 {
		d.fail(errors.New("unknown property bits"))
		return p
	}
	if mask&propPayloadFormat != 0 {
		v := d.byte()
		p.PayloadFormat = &v
	}
	if mask&propContentType != 0 {
		p.ContentType = d.str()
	}
	if mask&propResponseTopic != 0 {
		p.ResponseTopic = d.str()
	}
	if mask&propCorrelationData != 0 {
		p.CorrelationData = d.bytes()
	}
	if mask&propUserProperties != 0 {
		n := d.count(2)
		if n > 0 {
			p.UserProperties = make([]packet.UserProperty, n)
		}
		for i := range n {
			p.UserProperties[i] = packet.UserProperty{Key: d.str(), Value: d.str()}
		}
	}
	return p
}

// message: topic, payload, qos, flags (retain, origin), props, expiry,
// publisher [origin instance, origin seq].
func appendMessage(b []byte, m *store.Message) []byte {
	hasOrigin := m.Origin != (store.Origin{})
	b = appendStr(b, m.Topic)
	b = appendBytes(b, m.Payload)
	b = append(b, m.QoS, boolBit(m.Retain, 1)|boolBit(hasOrigin, msgOrigin))
	b = appendProps(b, &m.Props)
	b = appendTime(b, m.Expiry)
	b = appendStr(b, m.Publisher)
	if hasOrigin {
		b = binary.AppendUvarint(b, m.Origin.Instance)
		b = binary.AppendUvarint(b, m.Origin.Seq)
	}
	return b
}

// msgOrigin is the message flag saying an origin follows the publisher.
const msgOrigin = 2

func (d *dec) message(m *store.Message) {
	m.Topic = d.str()
	m.Payload = d.bytes()
	m.QoS = d.byte()
	flags := d.byte()
	if flags&^(1|msgOrigin) != 0 {
		d.fail(errors.New("unknown message flags"))
	}
	m.Retain = flags&1 != 0
	m.Props = d.props()
	m.Expiry = d.time()
	m.Publisher = d.str()
	if flags&msgOrigin != 0 {
		m.Origin.Instance = d.uvarint()
		m.Origin.Seq = d.uvarint()
	}
}

// EncodeMessage encodes a message or retained message value.
func encodeMessage(m *store.Message) []byte {
	return appendMessage(append(make([]byte, 0, 32+len(m.Topic)+len(m.Payload)), valueVersion), m)
}

func decodeMessage(b []byte) (*store.Message, error) {
	d := dec{b: b}
	d.version("message")
	m := new(store.Message)
	d.message(m)
	if err := d.done("message"); err != nil {
		return nil, err
	}
	return m, nil
}

// session: version, expiry interval, disconnected at, will flag [will].
func encodeSession(s *store.Session) []byte {
	b := []byte{valueVersion, s.Version}
	b = binary.BigEndian.AppendUint32(b, s.ExpiryInterval)
	b = appendTime(b, s.DisconnectedAt)
	if s.Will == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = appendMessage(b, &s.Will.Message)
	b = binary.AppendVarint(b, int64(s.Will.Delay))
	return binary.BigEndian.AppendUint32(b, s.Will.ExpiryInterval)
}

func decodeSession(clientID string, b []byte) (*store.Session, error) {
	d := dec{b: b}
	d.version("session")
	s := &store.Session{ClientID: clientID}
	s.Version = d.byte()
	s.ExpiryInterval = d.u32()
	s.DisconnectedAt = d.time()
	switch d.byte() {
	case 0:
	case 1:
		w := new(store.Will)
		d.message(&w.Message)
		w.Delay = time.Duration(d.varint())
		w.ExpiryInterval = d.u32()
		s.Will = w
	default:
		d.fail(errors.New("bad will flag"))
	}
	if err := d.done("session"); err != nil {
		return nil, err
	}
	return s, nil
}

// subscription: options byte (qos:2 nl:1 rap:1 rh:2 | own-filter flag),
// [options filter when it differs from the key's], id.
const subOwnFilter byte = 1 << 7

func encodeSubscription(s *store.Subscription) []byte {
	o := &s.Options
	flags := o.QoS&3 | boolBit(o.NoLocal, 1<<2) | boolBit(o.RetainAsPublished, 1<<3) | (o.RetainHandling&3)<<4
	b := []byte{valueVersion, flags | boolBit(o.Filter != s.Filter, subOwnFilter)}
	if o.Filter != s.Filter {
		b = appendStr(b, o.Filter)
	}
	return binary.AppendVarint(b, int64(s.ID))
}

func decodeSubscription(filter string, b []byte) (*store.Subscription, error) {
	d := dec{b: b}
	d.version("subscription")
	flags := d.byte()
	if flags&(1<<6) != 0 {
		d.fail(errors.New("unknown subscription flags"))
	}
	s := &store.Subscription{Filter: filter}
	s.Options = packet.Subscription{
		Filter:            filter,
		QoS:               flags & 3,
		NoLocal:           flags&(1<<2) != 0,
		RetainAsPublished: flags&(1<<3) != 0,
		RetainHandling:    flags >> 4 & 3,
	}
	if flags&subOwnFilter != 0 {
		s.Options.Filter = d.str()
	}
	s.ID = d.int()
	if err := d.done("subscription"); err != nil {
		return nil, err
	}
	return s, nil
}

// outbound: message id, qos, flags (retain), sub ids, group, filter,
// packet id, state.
func encodeOutbound(o *store.Outbound) []byte {
	b := make([]byte, 0, 24+len(o.Group)+len(o.Filter)+4*len(o.SubIDs))
	b = append(b, valueVersion)
	b = binary.AppendUvarint(b, o.MessageID)
	b = append(b, o.QoS, boolBit(o.Retain, 1))
	b = binary.AppendUvarint(b, uint64(len(o.SubIDs)))
	for _, id := range o.SubIDs {
		b = binary.AppendVarint(b, int64(id))
	}
	b = appendStr(b, o.Group)
	b = appendStr(b, o.Filter)
	b = binary.BigEndian.AppendUint16(b, o.PacketID)
	return append(b, o.State)
}

func decodeOutbound(b []byte) (*store.Outbound, error) {
	d := dec{b: b}
	d.version("outbound")
	o := new(store.Outbound)
	o.MessageID = d.uvarint()
	o.QoS = d.byte()
	flags := d.byte()
	if flags&^1 != 0 {
		d.fail(errors.New("unknown outbound flags"))
	}
	o.Retain = flags&1 != 0
	if n := d.count(1); n > 0 {
		o.SubIDs = make([]int, n)
		for i := range n {
			o.SubIDs[i] = d.int()
		}
	}
	o.Group = d.str()
	o.Filter = d.str()
	o.PacketID = d.u16()
	o.State = d.byte()
	if err := d.done("outbound"); err != nil {
		return nil, err
	}
	return o, nil
}

// inbound: the version byte only.
var inboundValue = []byte{valueVersion}

func decodeInbound(b []byte) error {
	d := dec{b: b}
	d.version("inbound")
	return d.done("inbound")
}
