package packet

// Connect flag bits.
const (
	flagReserved   = 0x01
	flagCleanStart = 0x02
	flagWill       = 0x04
	flagWillRetain = 0x20
	flagPassword   = 0x40
	flagUsername   = 0x80
)

// protocolName returns the name that goes with a protocol level.
func protocolName(level byte) string {
	if level == V31 {
		return "MQIsdp"
	}
	return "MQTT"
}

// decodeConnect decodes a CONNECT. One that names MQTT 5 but is malformed
// further on comes back as a Connect holding only its protocol name and
// level, with the error, so that a server may answer CONNACK with the
// error's reason code [MQTT-4.13.1-1]; 3.x has no code for it and closes.
func decodeConnect(body []byte) (Packet, error) {
	p, err := decodeConnectFields(body)
	if err != nil && p == nil && len(body) >= 7 && string(body[:7]) == "\x00\x04MQTT\x05" {
		return &Connect{ProtocolName: "MQTT", ProtocolVersion: V5}, err
	}
	return p, err
}

func decodeConnectFields(body []byte) (Packet, error) {
	d := &dec{b: body}
	name, err := d.bin("protocol name")
	if err != nil {
		return nil, err
	}
	level, err := d.u8("protocol level")
	if err != nil {
		return nil, err
	}
	c := &Connect{ProtocolVersion: level}
	switch string(name) {
	case "MQTT":
		c.ProtocolName = "MQTT"
	case "MQIsdp":
		c.ProtocolName = "MQIsdp"
	default:
		return nil, protocolErr("unknown protocol name") // [MQTT-3.1.2-1]
	}
	if protocolName(level) != c.ProtocolName || level < V31 || level > V5 {
		// [MQTT-3.1.2-2] the caller answers CONNACK 0x84 (v5) or 0x01 (3.x).
		return &Connect{ProtocolName: c.ProtocolName, ProtocolVersion: level},
			&Error{Code: UnsupportedProtocolVersion, Reason: "unsupported protocol level"}
	}
	v5 := level == V5
	flags, err := d.u8("connect flags")
	if err != nil {
		return nil, err
	}
	if flags&flagReserved != 0 {
		return nil, malformed("connect flags: reserved bit set") // [MQTT-3.1.2-3]
	}
	c.CleanStart = flags&flagCleanStart != 0
	willQoS := flags >> 3 & 3
	if flags&flagWill == 0 {
		if willQoS != 0 || flags&flagWillRetain != 0 {
			return nil, malformed("connect flags: will QoS or retain without will") // [MQTT-3.1.2-11] [MQTT-3.1.2-13]
		}
	} else if willQoS == 3 {
		return nil, malformed("connect flags: will QoS 3") // [MQTT-3.1.2-12]
	}
	c.HasUsername = flags&flagUsername != 0
	c.HasPassword = flags&flagPassword != 0
	if !v5 && c.HasPassword && !c.HasUsername {
		return nil, protocolErr("password without user name") // 3.1.1 [MQTT-3.1.2-22]
	}
	if c.KeepAlive, err = d.u16("keep alive"); err != nil {
		return nil, err
	}
	if v5 {
		seen, err := decodeProps(d, &c.Properties, ctxConnect)
		if err != nil {
			return nil, err
		}
		if seen&(1<<propAuthData) != 0 && seen&(1<<propAuthMethod) == 0 {
			return nil, protocolErr("authentication data without authentication method")
		}
	}
	// Payload order: client ID, will properties, will topic, will payload,
	// user name, password [MQTT-3.1.3-1].
	if c.ClientID, err = d.str("client identifier"); err != nil {
		return nil, err
	}
	if flags&flagWill != 0 {
		w := &Will{QoS: willQoS, Retain: flags&flagWillRetain != 0}
		if v5 {
			if _, err := decodeProps(d, &w.Properties, ctxWill); err != nil {
				return nil, err
			}
		}
		if w.Topic, err = d.str("will topic"); err != nil {
			return nil, err
		}
		if w.Payload, err = d.bin("will payload"); err != nil {
			return nil, err
		}
		c.Will = w
	}
	if c.HasUsername {
		if c.Username, err = d.str("user name"); err != nil {
			return nil, err
		}
	}
	if c.HasPassword {
		if c.Password, err = d.bin("password"); err != nil {
			return nil, err
		}
	}
	return done(c, d, "CONNECT")
}

func (c *Connect) flags() byte { return 0 }

func (c *Connect) level(v5 bool) byte {
	if c.ProtocolVersion != 0 {
		return c.ProtocolVersion
	}
	if v5 {
		return V5
	}
	return V311
}

func (c *Connect) size(v5 bool) (int, error) {
	level := c.level(v5)
	if c.ProtocolName != "" && c.ProtocolName != protocolName(level) {
		return 0, encErr("protocol name does not match protocol version")
	}
	n := 2 + len(protocolName(level)) + 1 + 1 + 2 // name, level, flags, keep alive
	if v5 {
		m, err := propsFieldSize(&c.Properties, ctxConnect)
		if err != nil {
			return 0, err
		}
		n += m
	}
	m, err := strSize("client identifier", len(c.ClientID))
	if err != nil {
		return 0, err
	}
	n += m
	if w := c.Will; w != nil {
		if w.QoS > 2 {
			return 0, encErr("will QoS above 2")
		}
		if v5 {
			m, err := propsFieldSize(&w.Properties, ctxWill)
			if err != nil {
				return 0, err
			}
			n += m
		}
		t, err := strSize("will topic", len(w.Topic))
		if err != nil {
			return 0, err
		}
		p, err := strSize("will payload", len(w.Payload))
		if err != nil {
			return 0, err
		}
		n += t + p
	}
	if c.HasUsername {
		m, err := strSize("user name", len(c.Username))
		if err != nil {
			return 0, err
		}
		n += m
	} else if !v5 && c.HasPassword {
		return 0, encErr("password without user name in MQTT 3")
	}
	if c.HasPassword {
		m, err := strSize("password", len(c.Password))
		if err != nil {
			return 0, err
		}
		n += m
	}
	return n, nil
}

func (c *Connect) appendBody(dst []byte, v5 bool) []byte {
	level := c.level(v5)
	dst = appendString(dst, protocolName(level))
	var flags byte
	if c.CleanStart {
		flags |= flagCleanStart
	}
	if w := c.Will; w != nil {
		flags |= flagWill | w.QoS<<3
		if w.Retain {
			flags |= flagWillRetain
		}
	}
	if c.HasPassword {
		flags |= flagPassword
	}
	if c.HasUsername {
		flags |= flagUsername
	}
	dst = append(dst, level, flags)
	dst = appendU16(dst, c.KeepAlive)
	if v5 {
		dst = appendProps(dst, &c.Properties, ctxConnect)
	}
	dst = appendString(dst, c.ClientID)
	if w := c.Will; w != nil {
		if v5 {
			dst = appendProps(dst, &w.Properties, ctxWill)
		}
		dst = appendString(dst, w.Topic)
		dst = appendBinary(dst, w.Payload)
	}
	if c.HasUsername {
		dst = appendString(dst, c.Username)
	}
	if c.HasPassword {
		dst = appendBinary(dst, c.Password)
	}
	return dst
}

func decodeConnack(d *dec, v5 bool) (Packet, error) {
	flags, err := d.u8("connack flags")
	if err != nil {
		return nil, err
	}
	if flags&^1 != 0 {
		return nil, malformed("connack flags: reserved bits set") // [MQTT-3.2.2-1]
	}
	code, err := d.u8("connack reason code")
	if err != nil {
		return nil, err
	}
	c := &Connack{SessionPresent: flags&1 != 0, ReasonCode: ReasonCode(code)}
	if v5 {
		if !connackCodes.has(c.ReasonCode) {
			return nil, protocolErr("invalid CONNACK reason code")
		}
		if _, err := decodeProps(d, &c.Properties, ctxConnack); err != nil {
			return nil, err
		}
	} else if code > byte(V3NotAuthorized) {
		return nil, protocolErr("invalid CONNACK return code")
	}
	if c.SessionPresent && c.ReasonCode != Success {
		return nil, protocolErr("session present with a non-zero reason code") // [MQTT-3.2.2-6]
	}
	return done(c, d, "CONNACK")
}

func (c *Connack) flags() byte { return 0 }

func (c *Connack) size(v5 bool) (int, error) {
	if !v5 {
		if c.ReasonCode > V3NotAuthorized {
			return 0, encErr("MQTT 3 CONNACK return code above 5")
		}
		return 2, nil
	}
	m, err := propsFieldSize(&c.Properties, ctxConnack)
	return 2 + m, err
}

func (c *Connack) appendBody(dst []byte, v5 bool) []byte {
	var flags byte
	if c.SessionPresent {
		flags = 1
	}
	dst = append(dst, flags, byte(c.ReasonCode))
	if v5 {
		dst = appendProps(dst, &c.Properties, ctxConnack)
	}
	return dst
}
