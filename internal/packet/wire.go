package packet

import (
	"encoding/binary"
	"strings"
	"unicode/utf8"
)

// maxUint16 bounds every length-prefixed string and binary field.
const maxUint16 = 65535

// ValidUTF8 reports whether s is an MQTT UTF-8 encoded string: well-formed
// UTF-8 without surrogates [MQTT-1.5.4-1] and without U+0000 [MQTT-1.5.4-2].
// utf8.ValidString already rejects encoded surrogates (U+D800..U+DFFF).
func ValidUTF8(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

func validUTF8Bytes(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return false
		}
	}
	return utf8.Valid(b)
}

// dec reads a packet body. Every read checks the bytes left first, so no
// length taken from the wire is trusted before slicing or allocating.
type dec struct {
	b []byte
}

func (d *dec) len() int { return len(d.b) }

func (d *dec) u8(what string) (byte, error) {
	if len(d.b) < 1 {
		return 0, malformed(what + ": truncated")
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v, nil
}

func (d *dec) u16(what string) (uint16, error) {
	if len(d.b) < 2 {
		return 0, malformed(what + ": truncated")
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v, nil
}

func (d *dec) u32(what string) (uint32, error) {
	if len(d.b) < 4 {
		return 0, malformed(what + ": truncated")
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v, nil
}

// varint reads a variable byte integer from the body.
func (d *dec) varint(what string) (int, error) {
	n, used, err := parseVarint(d.b)
	if err != nil {
		return 0, malformed(what + ": " + err.(*Error).Reason)
	}
	d.b = d.b[used:]
	return n, nil
}

// bin reads two-byte-length-prefixed binary data; the result aliases the
// input and is nil when empty, so "absent" and "empty" compare equal.
func (d *dec) bin(what string) ([]byte, error) {
	n, err := d.u16(what)
	if err != nil {
		return nil, err
	}
	if int(n) > len(d.b) {
		return nil, malformed(what + ": length exceeds packet")
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	if n == 0 {
		return nil, nil
	}
	return v, nil
}

// str reads an MQTT UTF-8 string and copies it out of the input.
func (d *dec) str(what string) (string, error) {
	b, err := d.bin(what)
	if err != nil {
		return "", err
	}
	if !validUTF8Bytes(b) {
		return "", malformed(what + ": invalid UTF-8") // [MQTT-1.5.4-1] [MQTT-1.5.4-2]
	}
	return string(b), nil
}

// end reports trailing bytes, which make a packet malformed.
func (d *dec) end(what string) error {
	if len(d.b) != 0 {
		return malformed(what + ": unexpected trailing bytes")
	}
	return nil
}

// done returns p, or an error and no packet if bytes are left over.
func done(p Packet, d *dec, what string) (Packet, error) {
	if err := d.end(what); err != nil {
		return nil, err
	}
	return p, nil
}

// parseVarint decodes a variable byte integer from the start of b and
// returns it with the number of bytes used.
func parseVarint(b []byte) (n, used int, err error) {
	mult := 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, malformed("variable byte integer truncated")
		}
		c := b[i]
		n += int(c&0x7f) * mult
		if c&0x80 == 0 {
			// [MQTT-1.5.5-1] the minimum number of bytes must be used: a
			// trailing zero group means a shorter encoding existed.
			if i > 0 && c == 0 {
				return 0, 0, malformed("variable byte integer not minimally encoded")
			}
			return n, i + 1, nil
		}
		mult <<= 7
	}
	return 0, 0, malformed("variable byte integer longer than 4 bytes") // [MQTT-1.5.5-1]
}

// AppendVarint appends n as a variable byte integer. n must be within
// 0..MaxRemaining; anything else is a programming error and panics.
func AppendVarint(dst []byte, n int) []byte {
	if n < 0 || n > MaxRemaining {
		panic("packet: AppendVarint out of range")
	}
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(dst, c)
		}
		dst = append(dst, c|0x80)
	}
}

// varintLen is the encoded size of n (0..MaxRemaining).
func varintLen(n int) int {
	switch {
	case n < 1<<7:
		return 1
	case n < 1<<14:
		return 2
	case n < 1<<21:
		return 3
	default:
		return 4
	}
}

func appendU16(dst []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(dst, v) }
func appendU32(dst []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(dst, v) }

func appendString(dst []byte, s string) []byte {
	dst = appendU16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendBinary(dst []byte, b []byte) []byte {
	dst = appendU16(dst, uint16(len(b)))
	return append(dst, b...)
}

// strSize is the encoded size of a length-prefixed field, or an error when
// it does not fit the two-byte length.
func strSize(what string, n int) (int, error) {
	if n > maxUint16 {
		return 0, &Error{Code: MalformedPacket, Reason: what + ": longer than 65535 bytes"}
	}
	return 2 + n, nil
}
