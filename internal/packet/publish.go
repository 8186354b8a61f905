package packet

import "slices"

func decodePublish(d *dec, flags byte, v5 bool) (Packet, error) {
	p := new(Publish)
	if err := decodePublishInto(p, d, flags, v5, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// DecodePublish decodes the body of a PUBLISH (fh.Type must be PUBLISH)
// into p, overwriting all of it, as Decode would. Payload aliases body.
// last, when not nil, is a cache of the topic decoded before: when the
// topic is the same, p.Topic is *last and no string is allocated; when it
// differs, the new topic is stored there. A connection that decodes every
// PUBLISH into one value with this allocates nothing for a publisher that
// keeps to one topic.
func DecodePublish(p *Publish, fh FixedHeader, body []byte, version byte, last *string) error {
	if err := checkFlags(fh.Type, fh.Flags); err != nil {
		return err
	}
	if fh.Type != PUBLISH {
		return malformed("not a PUBLISH")
	}
	if fh.Remaining != len(body) {
		return malformed("body length differs from remaining length")
	}
	if version != V31 && version != V311 && version != V5 {
		return &Error{Code: UnsupportedProtocolVersion, Reason: "unsupported protocol version"}
	}
	d := dec{b: body}
	return decodePublishInto(p, &d, fh.Flags, version == V5, last)
}

func decodePublishInto(p *Publish, d *dec, flags byte, v5 bool, last *string) error {
	*p = Publish{
		Dup:    flags&0x08 != 0,
		QoS:    flags >> 1 & 3,
		Retain: flags&0x01 != 0,
	}
	// Wildcards and an empty topic are the broker's to reject: a v5 topic
	// alias allows an empty topic here.
	tb, err := d.bin("topic name")
	if err != nil {
		return err
	}
	if !validUTF8Bytes(tb) {
		return malformed("topic name: invalid UTF-8") // [MQTT-1.5.4-1] [MQTT-1.5.4-2]
	}
	switch {
	case last == nil:
		p.Topic = string(tb)
	case *last == string(tb): // compared without a copy
		p.Topic = *last
	default:
		p.Topic = string(tb)
		*last = p.Topic
	}
	if p.QoS > 0 {
		if p.PacketID, err = d.u16("packet identifier"); err != nil {
			return err
		}
		if p.PacketID == 0 {
			return protocolErr("packet identifier 0") // [MQTT-2.2.1-3]
		}
	}
	if v5 {
		if _, err := decodeProps(d, &p.Properties, ctxPublish); err != nil {
			return err
		}
	}
	// The payload is the rest of the body (section 3.3.3). Capping its capacity
	// keeps an append by the caller from overwriting the read buffer. A
	// Payload Format Indicator of 1 is checked by the broker (0x99).
	if n := len(d.b); n > 0 {
		p.Payload = d.b[:n:n]
	}
	return nil
}

// AppendPublishHead is AppendPublish without the payload: the fixed
// header (its remaining length counts the payload), topic, packet ID and
// properties. The caller writes p.Payload right after it (a vectored
// write sends a large payload without copying it into a write buffer).
func AppendPublishHead(dst []byte, p *Publish, version byte) ([]byte, error) {
	n, v5, err := p.checkEncode(version)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(PUBLISH)<<4|p.flags())
	dst = AppendVarint(dst, n)
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if v5 {
		dst = appendProps(dst, &p.Properties, ctxPublish)
	}
	return dst, nil
}

// AppendPublish is Append for a PUBLISH. Unlike Append it takes the
// concrete type, so a caller's Publish value need not escape to the heap.
func AppendPublish(dst []byte, p *Publish, version byte) ([]byte, error) {
	n, v5, err := p.checkEncode(version)
	if err != nil {
		return dst, err
	}
	dst = slices.Grow(dst, 1+varintLen(n)+n)
	dst = append(dst, byte(PUBLISH)<<4|p.flags())
	dst = AppendVarint(dst, n)
	return p.appendBody(dst, v5), nil
}

// checkEncode checks that p can be encoded for version and returns its
// remaining length and whether version is MQTT 5.
func (p *Publish) checkEncode(version byte) (n int, v5 bool, err error) {
	if version != V31 && version != V311 && version != V5 {
		return 0, false, &Error{Code: UnsupportedProtocolVersion, Reason: "encode: unsupported protocol version"}
	}
	v5 = version == V5
	if n, err = p.size(v5); err != nil {
		return 0, v5, err
	}
	if n > MaxRemaining {
		return 0, v5, &Error{Code: PacketTooLarge, Reason: "encode: packet larger than the maximum remaining length"}
	}
	return n, v5, nil
}

func (p *Publish) flags() byte {
	f := p.QoS << 1
	if p.Dup {
		f |= 0x08
	}
	if p.Retain {
		f |= 0x01
	}
	return f
}

func (p *Publish) size(v5 bool) (int, error) {
	if p.QoS > 2 {
		return 0, encErr("PUBLISH QoS above 2")
	}
	if p.QoS == 0 && p.Dup {
		return 0, encErr("PUBLISH QoS 0 with DUP") // [MQTT-3.3.1-2]
	}
	n, err := strSize("topic name", len(p.Topic))
	if err != nil {
		return 0, err
	}
	if p.QoS > 0 {
		if p.PacketID == 0 {
			return 0, encErr("PUBLISH packet identifier 0") // [MQTT-2.2.1-3]
		}
		n += 2
	}
	if v5 {
		m, err := propsFieldSize(&p.Properties, ctxPublish)
		if err != nil {
			return 0, err
		}
		n += m
	}
	if len(p.Payload) > MaxRemaining {
		return 0, &Error{Code: PacketTooLarge, Reason: "encode: payload too large"}
	}
	return n + len(p.Payload), nil
}

func (p *Publish) appendBody(dst []byte, v5 bool) []byte {
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if v5 {
		dst = appendProps(dst, &p.Properties, ctxPublish)
	}
	return append(dst, p.Payload...)
}

func decodeAck(d *dec, kind Type, v5 bool) (Packet, error) {
	a := new(Ack)
	if err := decodeAckInto(a, d, kind, v5); err != nil {
		return nil, err
	}
	return a, nil
}

// DecodeAck decodes the body of a PUBACK, PUBREC, PUBREL or PUBCOMP into
// a, overwriting all of it, as Decode would: a connection decodes every
// acknowledgement into one value.
func DecodeAck(a *Ack, fh FixedHeader, body []byte, version byte) error {
	if err := checkFlags(fh.Type, fh.Flags); err != nil {
		return err
	}
	if fh.Type < PUBACK || fh.Type > PUBCOMP {
		return malformed("not an acknowledgement")
	}
	if fh.Remaining != len(body) {
		return malformed("body length differs from remaining length")
	}
	if version != V31 && version != V311 && version != V5 {
		return &Error{Code: UnsupportedProtocolVersion, Reason: "unsupported protocol version"}
	}
	d := dec{b: body}
	return decodeAckInto(a, &d, fh.Type, version == V5)
}

func decodeAckInto(a *Ack, d *dec, kind Type, v5 bool) error {
	*a = Ack{Kind: kind}
	var err error
	if a.PacketID, err = d.u16("packet identifier"); err != nil {
		return err
	}
	if a.PacketID == 0 {
		return protocolErr("packet identifier 0") // [MQTT-2.2.1-3]
	}
	// v5: remaining length 2 means reason 0 and no properties; 3 means a
	// reason code only [MQTT-3.4.2-1].
	if v5 && d.len() > 0 {
		code, _ := d.u8("reason code")
		a.ReasonCode = ReasonCode(code)
		codes := &pubackCodes
		if kind == PUBREL || kind == PUBCOMP {
			codes = &pubrelCodes
		}
		if !codes.has(a.ReasonCode) {
			return protocolErr("invalid reason code")
		}
		if d.len() > 0 {
			if _, err := decodeProps(d, &a.Properties, ctxAck); err != nil {
				return err
			}
		}
	}
	return d.end("ack")
}

func (a *Ack) flags() byte {
	if a.Kind == PUBREL {
		return 0x02
	}
	return 0
}

func (a *Ack) size(v5 bool) (int, error) {
	if a.Kind < PUBACK || a.Kind > PUBCOMP {
		return 0, encErr("Ack kind is not PUBACK, PUBREC, PUBREL or PUBCOMP")
	}
	if a.PacketID == 0 {
		return 0, encErr("ack packet identifier 0")
	}
	if !v5 {
		return 2, nil
	}
	n, err := propsSize(&a.Properties, ctxAck)
	switch {
	case err != nil:
		return 0, err
	case n > 0:
		return 3 + varintLen(n) + n, nil
	case a.ReasonCode != Success:
		return 3, nil
	}
	return 2, nil
}

func (a *Ack) appendBody(dst []byte, v5 bool) []byte {
	dst = appendU16(dst, a.PacketID)
	if !v5 {
		return dst
	}
	if !a.Properties.empty(ctxAck) {
		return appendProps(append(dst, byte(a.ReasonCode)), &a.Properties, ctxAck)
	}
	if a.ReasonCode != Success {
		dst = append(dst, byte(a.ReasonCode))
	}
	return dst
}
