package packet

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

func addSeeds(f *testing.F) {
	for _, g := range goldenPackets {
		f.Add(g.version, g.raw)
	}
	for _, b := range badPackets {
		f.Add(b.version, b.raw)
	}
}

// FuzzReadFixedHeader checks that any accepted header re-encodes to exactly
// the bytes read, since only minimal remaining lengths are accepted.
func FuzzReadFixedHeader(f *testing.F) {
	for _, g := range goldenPackets {
		f.Add(g.raw)
	}
	f.Add([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		fh, err := ReadFixedHeader(r)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if fh.Remaining < 0 || fh.Remaining > MaxRemaining {
			t.Fatalf("remaining %d out of range", fh.Remaining)
		}
		used := len(data) - r.Len()
		again := AppendVarint([]byte{byte(fh.Type)<<4 | fh.Flags}, fh.Remaining)
		if !bytes.Equal(again, data[:used]) {
			t.Fatalf("header % X re-encodes as % X", data[:used], again)
		}
	})
}

// FuzzDecode decodes a whole packet (fixed header included) for a fuzzed
// connection version. Decoding must not panic; errors must be *Error; and a
// packet that decodes must encode, with Size agreeing, and decode back to
// the same value.
func FuzzDecode(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, version byte, data []byte) {
		r := bytes.NewReader(data)
		fh, err := ReadFixedHeader(r)
		if err != nil || fh.Remaining > r.Len() {
			return
		}
		body := data[len(data)-r.Len():][:fh.Remaining]
		p, err := Decode(fh, body, version)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			if p != nil && e.Code != UnsupportedProtocolVersion && !isV5Connect(p) {
				t.Fatalf("packet returned with error %v", err)
			}
			return
		}
		roundTrip(t, p, version)
	})
}

func roundTrip(t *testing.T, p Packet, version byte) {
	t.Helper()
	if c, ok := p.(*Connect); ok {
		version = c.ProtocolVersion
	}
	out, err := Append(nil, p, version)
	if err != nil {
		t.Fatalf("decoded %#v does not encode: %v", p, err)
	}
	if n, err := Size(p, version); err != nil || n != len(out) {
		t.Fatalf("Size = %d, %v; Append wrote %d", n, err, len(out))
	}
	r := bytes.NewReader(out)
	fh, err := ReadFixedHeader(r)
	if err != nil {
		t.Fatalf("re-encoded header: %v", err)
	}
	p2, err := Decode(fh, out[len(out)-r.Len():], version)
	if err != nil {
		t.Fatalf("re-encoded % X does not decode: %v", out, err)
	}
	if !reflect.DeepEqual(p, p2) {
		t.Fatalf("round trip changed the packet\n got %#v\nwant %#v", p2, p)
	}
	// The canonical form is a fixed point.
	if out2, _ := Append(nil, p2, version); !bytes.Equal(out, out2) {
		t.Fatalf("encoding not stable: % X then % X", out, out2)
	}
}

var fuzzCtxs = []propCtx{ctxConnect, ctxConnack, ctxPublish, ctxAck, ctxSubscribe, ctxSuback,
	ctxUnsubscribe, ctxUnsuback, ctxDisconnect, ctxAuth, ctxWill}

// FuzzProperties targets the property decoder directly, in every context,
// with the same round-trip check.
func FuzzProperties(f *testing.F) {
	for _, g := range goldenPackets {
		for _, p := range propsOf(g.pkt) {
			for i, ctx := range fuzzCtxs {
				if n, err := propsSize(p, ctx); err == nil && n > 0 {
					f.Add(byte(i), appendProps(nil, p, ctx))
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		ctx := fuzzCtxs[int(which)%len(fuzzCtxs)]
		var p Properties
		d := &dec{b: data}
		seen, err := decodeProps(d, &p, ctx)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T is not *Error", err)
			}
			return
		}
		if bits := propBits(&p); bits&^seen != 0 {
			t.Fatalf("fields set (%b) that were not seen (%b)", bits, seen)
		}
		out := appendProps(nil, &p, ctx)
		if n, err := propsFieldSize(&p, ctx); err != nil || n != len(out) {
			t.Fatalf("propsFieldSize = %d, %v; wrote %d", n, err, len(out))
		}
		var p2 Properties
		if _, err := decodeProps(&dec{b: out}, &p2, ctx); err != nil {
			t.Fatalf("re-encoded % X: %v", out, err)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("round trip changed the properties\n got %#v\nwant %#v", p2, p)
		}
	})
}

// TestTruncations decodes every prefix of every golden body: none may panic
// and none but the whole body may succeed for packets whose last field has a
// length (payloads and reason code lists can legitimately be cut short).
func TestTruncations(t *testing.T) {
	for _, g := range goldenPackets {
		r := bytes.NewReader(g.raw)
		fh, _ := ReadFixedHeader(r)
		body := g.raw[len(g.raw)-r.Len():]
		for n := 0; n < len(body); n++ {
			fh.Remaining = n
			p, err := Decode(fh, body[:n], g.version)
			if err == nil {
				roundTrip(t, p, g.version)
			}
		}
	}
}
