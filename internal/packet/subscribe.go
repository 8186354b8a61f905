package packet

func decodePacketID(d *dec) (uint16, error) {
	id, err := d.u16("packet identifier")
	if err != nil {
		return 0, err
	}
	if id == 0 {
		return 0, protocolErr("packet identifier 0") // [MQTT-2.2.1-3]
	}
	return id, nil
}

func decodeSubscribe(d *dec, v5 bool) (Packet, error) {
	s := &Subscribe{}
	var err error
	if s.PacketID, err = decodePacketID(d); err != nil {
		return nil, err
	}
	if v5 {
		if _, err := decodeProps(d, &s.Properties, ctxSubscribe); err != nil {
			return nil, err
		}
	}
	for d.len() > 0 {
		var sub Subscription
		if sub.Filter, err = d.str("topic filter"); err != nil {
			return nil, err
		}
		opts, err := d.u8("subscription options")
		if err != nil {
			return nil, err
		}
		sub.QoS = opts & 3
		if sub.QoS == 3 {
			if v5 {
				// MQTT 5.0 section 3.8.3.1: "It is a Protocol Error if
				// the Maximum QoS field has the value 3."
				return nil, protocolErr("subscription maximum QoS 3")
			}
			return nil, malformed("subscription QoS 3") // 3.1.1 [MQTT-3-8.3-4]
		}
		if v5 {
			if opts&0xC0 != 0 {
				return nil, malformed("subscription options: reserved bits set") // [MQTT-3.8.3-5]
			}
			sub.NoLocal = opts&0x04 != 0
			sub.RetainAsPublished = opts&0x08 != 0
			sub.RetainHandling = opts >> 4 & 3
			if sub.RetainHandling == 3 {
				return nil, protocolErr("retain handling 3")
			}
		} else if opts&0xFC != 0 {
			return nil, malformed("subscription options: reserved bits set") // 3.1.1 [MQTT-3-8.3-4]
		}
		s.Subscriptions = append(s.Subscriptions, sub)
	}
	if len(s.Subscriptions) == 0 {
		return nil, protocolErr("SUBSCRIBE without topic filters") // [MQTT-3.8.3-3]
	}
	return s, nil
}

func (*Subscribe) flags() byte { return 0x02 }

func (s *Subscribe) size(v5 bool) (int, error) {
	if s.PacketID == 0 {
		return 0, encErr("SUBSCRIBE packet identifier 0")
	}
	if len(s.Subscriptions) == 0 {
		return 0, encErr("SUBSCRIBE without topic filters")
	}
	n := 2
	if v5 {
		m, err := propsFieldSize(&s.Properties, ctxSubscribe)
		if err != nil {
			return 0, err
		}
		n += m
	}
	for i := range s.Subscriptions {
		sub := &s.Subscriptions[i]
		if sub.QoS > 2 || sub.RetainHandling > 2 {
			return 0, encErr("subscription QoS or retain handling above 2")
		}
		m, err := strSize("topic filter", len(sub.Filter))
		if err != nil {
			return 0, err
		}
		n += m + 1
		if n > MaxRemaining {
			break // prepare reports it; avoids overflow on huge lists
		}
	}
	return n, nil
}

func (s *Subscribe) appendBody(dst []byte, v5 bool) []byte {
	dst = appendU16(dst, s.PacketID)
	if v5 {
		dst = appendProps(dst, &s.Properties, ctxSubscribe)
	}
	for i := range s.Subscriptions {
		sub := &s.Subscriptions[i]
		opts := sub.QoS
		if v5 {
			if sub.NoLocal {
				opts |= 0x04
			}
			if sub.RetainAsPublished {
				opts |= 0x08
			}
			opts |= sub.RetainHandling << 4
		}
		dst = append(appendString(dst, sub.Filter), opts)
	}
	return dst
}

// decodeCodes reads the reason code list of SUBACK or UNSUBACK, which has one
// entry per filter of the request and so is never empty.
func decodeCodes(d *dec, set *codeSet) ([]ReasonCode, error) {
	if d.len() == 0 {
		return nil, protocolErr("no reason codes")
	}
	codes := make([]ReasonCode, d.len())
	for i, c := range d.b {
		codes[i] = ReasonCode(c)
		if !set.has(codes[i]) {
			return nil, protocolErr("invalid reason code")
		}
	}
	d.b = d.b[len(d.b):]
	return codes, nil
}

func decodeSuback(d *dec, v5 bool) (Packet, error) {
	s := &Suback{}
	var err error
	if s.PacketID, err = decodePacketID(d); err != nil {
		return nil, err
	}
	set := &subackV3Codes
	if v5 {
		set = &subackCodes
		if _, err := decodeProps(d, &s.Properties, ctxSuback); err != nil {
			return nil, err
		}
	}
	if s.ReasonCodes, err = decodeCodes(d, set); err != nil {
		return nil, err
	}
	return s, nil
}

func (*Suback) flags() byte { return 0 }

func (s *Suback) size(v5 bool) (int, error) {
	if s.PacketID == 0 {
		return 0, encErr("SUBACK packet identifier 0")
	}
	if len(s.ReasonCodes) == 0 {
		return 0, encErr("SUBACK without reason codes")
	}
	n := 2 + len(s.ReasonCodes)
	if v5 {
		m, err := propsFieldSize(&s.Properties, ctxSuback)
		if err != nil {
			return 0, err
		}
		n += m
	}
	return n, nil
}

func (s *Suback) appendBody(dst []byte, v5 bool) []byte {
	dst = appendU16(dst, s.PacketID)
	if v5 {
		dst = appendProps(dst, &s.Properties, ctxSuback)
		for _, c := range s.ReasonCodes {
			dst = append(dst, byte(c))
		}
		return dst
	}
	for _, c := range s.ReasonCodes {
		// 3.x has a single failure code [MQTT-3.9.3-2]; v5 failure reasons
		// map onto it so the broker can use one set of codes.
		if c >= UnspecifiedError {
			c = UnspecifiedError
		}
		dst = append(dst, byte(c))
	}
	return dst
}

func decodeUnsubscribe(d *dec, v5 bool) (Packet, error) {
	u := &Unsubscribe{}
	var err error
	if u.PacketID, err = decodePacketID(d); err != nil {
		return nil, err
	}
	if v5 {
		if _, err := decodeProps(d, &u.Properties, ctxUnsubscribe); err != nil {
			return nil, err
		}
	}
	for d.len() > 0 {
		f, err := d.str("topic filter")
		if err != nil {
			return nil, err
		}
		u.Filters = append(u.Filters, f)
	}
	if len(u.Filters) == 0 {
		return nil, protocolErr("UNSUBSCRIBE without topic filters") // [MQTT-3.10.3-2]
	}
	return u, nil
}

func (*Unsubscribe) flags() byte { return 0x02 }

func (u *Unsubscribe) size(v5 bool) (int, error) {
	if u.PacketID == 0 {
		return 0, encErr("UNSUBSCRIBE packet identifier 0")
	}
	if len(u.Filters) == 0 {
		return 0, encErr("UNSUBSCRIBE without topic filters")
	}
	n := 2
	if v5 {
		m, err := propsFieldSize(&u.Properties, ctxUnsubscribe)
		if err != nil {
			return 0, err
		}
		n += m
	}
	for _, f := range u.Filters {
		m, err := strSize("topic filter", len(f))
		if err != nil {
			return 0, err
		}
		n += m
		if n > MaxRemaining {
			break // prepare reports it
		}
	}
	return n, nil
}

func (u *Unsubscribe) appendBody(dst []byte, v5 bool) []byte {
	dst = appendU16(dst, u.PacketID)
	if v5 {
		dst = appendProps(dst, &u.Properties, ctxUnsubscribe)
	}
	for _, f := range u.Filters {
		dst = appendString(dst, f)
	}
	return dst
}

func decodeUnsuback(d *dec, v5 bool) (Packet, error) {
	u := &Unsuback{}
	var err error
	if u.PacketID, err = decodePacketID(d); err != nil {
		return nil, err
	}
	if !v5 {
		return done(u, d, "UNSUBACK") // 3.x UNSUBACK is only the packet identifier
	}
	if _, err := decodeProps(d, &u.Properties, ctxUnsuback); err != nil {
		return nil, err
	}
	if u.ReasonCodes, err = decodeCodes(d, &unsubackCodes); err != nil {
		return nil, err
	}
	return u, nil
}

func (*Unsuback) flags() byte { return 0 }

func (u *Unsuback) size(v5 bool) (int, error) {
	if u.PacketID == 0 {
		return 0, encErr("UNSUBACK packet identifier 0")
	}
	if !v5 {
		return 2, nil
	}
	if len(u.ReasonCodes) == 0 {
		return 0, encErr("UNSUBACK without reason codes")
	}
	m, err := propsFieldSize(&u.Properties, ctxUnsuback)
	return 2 + m + len(u.ReasonCodes), err
}

func (u *Unsuback) appendBody(dst []byte, v5 bool) []byte {
	dst = appendU16(dst, u.PacketID)
	if !v5 {
		return dst
	}
	dst = appendProps(dst, &u.Properties, ctxUnsuback)
	for _, c := range u.ReasonCodes {
		dst = append(dst, byte(c))
	}
	return dst
}
