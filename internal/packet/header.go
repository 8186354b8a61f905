package packet

import (
	"io"
	"slices"
)

// ReadFixedHeader reads the first byte and the remaining length (variable
// byte integer, at most 4 bytes [MQTT-1.5.5-1]) from r and validates the type
// and flags. It returns io.EOF untouched if r is at EOF before the first byte
// and io.ErrUnexpectedEOF if it ends inside the header.
func ReadFixedHeader(r io.ByteReader) (FixedHeader, error) {
	b, err := r.ReadByte()
	if err != nil {
		return FixedHeader{}, err
	}
	fh := FixedHeader{Type: Type(b >> 4), Flags: b & 0x0f}
	if err := checkFlags(fh.Type, fh.Flags); err != nil {
		return FixedHeader{}, err
	}
	mult := 1
	for i := 0; ; i++ {
		if i == 4 {
			return FixedHeader{}, malformed("remaining length longer than 4 bytes") // [MQTT-1.5.5-1]
		}
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return FixedHeader{}, err
		}
		fh.Remaining += int(c&0x7f) * mult
		if c&0x80 == 0 {
			if i > 0 && c == 0 {
				return FixedHeader{}, malformed("remaining length not minimally encoded") // [MQTT-1.5.5-1]
			}
			return fh, nil
		}
		mult <<= 7
	}
}

// checkFlags validates the packet type and the low nibble of the first byte.
func checkFlags(t Type, flags byte) error {
	switch t {
	case 0:
		return malformed("packet type 0 is reserved")
	case PUBLISH:
		qos := flags >> 1 & 3
		if qos == 3 {
			return malformed("PUBLISH QoS 3") // [MQTT-3.3.1-4]
		}
		if qos == 0 && flags&0x08 != 0 {
			return malformed("PUBLISH QoS 0 with DUP set") // [MQTT-3.3.1-2]
		}
		return nil
	case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
		if flags != 0x02 {
			return malformed("reserved fixed header flags must be 0010") // [MQTT-2.1.3-1]
		}
		return nil
	default:
		if flags != 0 {
			return malformed("reserved fixed header flags must be 0000") // [MQTT-2.1.3-1]
		}
		return nil
	}
}

// Decode decodes the body (exactly fh.Remaining bytes) of a packet. version
// is the connection's protocol level (V31, V311, V5) and is ignored for
// CONNECT, which carries its own. The returned packet may alias body
// (Publish.Payload, Password, CorrelationData, AuthData, will payload);
// strings are copied. Errors are *Error with the reason code to report.
//
// For a CONNECT with a known protocol name but an unsupported level, Decode
// returns a *Connect holding only ProtocolName and ProtocolVersion together
// with an *Error of code UnsupportedProtocolVersion, so the caller can answer
// with a CONNACK in a form the client understands.
func Decode(fh FixedHeader, body []byte, version byte) (Packet, error) {
	if err := checkFlags(fh.Type, fh.Flags); err != nil {
		return nil, err
	}
	if fh.Remaining != len(body) {
		return nil, malformed("body length differs from remaining length")
	}
	if fh.Type == CONNECT {
		return decodeConnect(body)
	}
	if version != V31 && version != V311 && version != V5 {
		return nil, &Error{Code: UnsupportedProtocolVersion, Reason: "unsupported protocol version"}
	}
	d := &dec{b: body}
	v5 := version == V5
	switch fh.Type {
	case CONNACK:
		return decodeConnack(d, v5)
	case PUBLISH:
		return decodePublish(d, fh.Flags, v5)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		return decodeAck(d, fh.Type, v5)
	case SUBSCRIBE:
		return decodeSubscribe(d, v5)
	case SUBACK:
		return decodeSuback(d, v5)
	case UNSUBSCRIBE:
		return decodeUnsubscribe(d, v5)
	case UNSUBACK:
		return decodeUnsuback(d, v5)
	case PINGREQ:
		return done(&Pingreq{}, d, "PINGREQ")
	case PINGRESP:
		return done(&Pingresp{}, d, "PINGRESP")
	case DISCONNECT:
		return decodeDisconnect(d, v5)
	case AUTH:
		if !v5 {
			return nil, malformed("AUTH is only defined in MQTT 5")
		}
		return decodeAuth(d)
	}
	return nil, malformed("unknown packet type")
}

// encoder is implemented by every packet: size validates p and returns the
// remaining length; appendBody writes exactly that many bytes and may assume
// size succeeded.
type encoder interface {
	size(v5 bool) (int, error)
	appendBody(dst []byte, v5 bool) []byte
	flags() byte
}

// encErr is an error for a value that cannot be put on the wire.
func encErr(reason string) error {
	return &Error{Code: MalformedPacket, Reason: "encode: " + reason}
}

func prepare(p Packet, version byte) (encoder, bool, int, error) {
	if c, ok := p.(*Connect); ok && c.ProtocolVersion != 0 {
		version = c.ProtocolVersion // CONNECT carries its own level
	}
	if version != V31 && version != V311 && version != V5 {
		return nil, false, 0, &Error{Code: UnsupportedProtocolVersion, Reason: "encode: unsupported protocol version"}
	}
	e, ok := p.(encoder)
	if !ok || p == nil {
		return nil, false, 0, encErr("unknown packet")
	}
	v5 := version == V5
	if p.Type() == AUTH && !v5 {
		return nil, false, 0, encErr("AUTH is only defined in MQTT 5")
	}
	n, err := e.size(v5)
	if err != nil {
		return nil, false, 0, err
	}
	if n > MaxRemaining {
		return nil, false, 0, &Error{Code: PacketTooLarge, Reason: "encode: packet larger than the maximum remaining length"}
	}
	return e, v5, n, nil
}

// Append encodes p for the protocol version (ignored for CONNECT if its
// ProtocolVersion is set) and appends it, fixed header included, to dst. It
// returns an error for values that cannot be encoded. Properties that the
// packet type may not carry are left out, so a will's properties can be
// reused for its PUBLISH. It does not allocate when dst has room. p must not
// be a typed nil pointer.
func Append(dst []byte, p Packet, version byte) ([]byte, error) {
	e, v5, n, err := prepare(p, version)
	if err != nil {
		return dst, err
	}
	dst = slices.Grow(dst, 1+varintLen(n)+n)
	dst = append(dst, byte(p.Type())<<4|e.flags())
	dst = AppendVarint(dst, n)
	return e.appendBody(dst, v5), nil
}

// Size returns the length of Append's output for p without encoding it, for
// Maximum Packet Size checks.
func Size(p Packet, version byte) (int, error) {
	_, _, n, err := prepare(p, version)
	if err != nil {
		return 0, err
	}
	return 1 + varintLen(n) + n, nil
}
