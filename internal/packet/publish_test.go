package packet

import (
	"bytes"
	"reflect"
	"testing"
	"unsafe"
)

// TestDecodePublishMatchesDecode checks DecodePublish against Decode on
// every PUBLISH of the golden table, into a value that held another
// packet before, and AppendPublish against Append.
func TestDecodePublishMatchesDecode(t *testing.T) {
	n := 0
	for _, g := range goldenPackets {
		want, ok := g.pkt.(*Publish)
		if !ok {
			continue
		}
		n++
		t.Run(g.name, func(t *testing.T) {
			fh, err := ReadFixedHeader(bytes.NewReader(g.raw))
			if err != nil {
				t.Fatal(err)
			}
			body := g.raw[len(g.raw)-fh.Remaining:]
			p := &Publish{Topic: "stale", Dup: true, PacketID: 9, Properties: Properties{ContentType: "x"}, Payload: []byte("old")}
			last := "other"
			if err := DecodePublish(p, fh, body, g.version, &last); err != nil {
				t.Fatalf("DecodePublish: %v", err)
			}
			if !reflect.DeepEqual(p, want) {
				t.Fatalf("decode mismatch\n got %#v\nwant %#v", p, want)
			}
			if last != want.Topic {
				t.Fatalf("topic cache %q, want %q", last, want.Topic)
			}
			if !g.decodeOnly {
				got, err := AppendPublish(nil, want, g.version)
				if err != nil || !bytes.Equal(got, g.raw) {
					t.Fatalf("AppendPublish = % X, %v; want % X", got, err, g.raw)
				}
			}
		})
	}
	if n == 0 {
		t.Fatal("no PUBLISH in the golden table")
	}
}

// TestDecodePublishReusesTopic checks that a repeated topic costs no
// allocation: the cached string is reused.
func TestDecodePublishReusesTopic(t *testing.T) {
	raw, err := Append(nil, &Publish{Topic: "sensors/a", Payload: []byte("hello")}, V311)
	if err != nil {
		t.Fatal(err)
	}
	fh := FixedHeader{Type: PUBLISH, Remaining: len(raw) - 2}
	body := raw[2:]
	var p Publish
	var last string
	if err := DecodePublish(&p, fh, body, V311, &last); err != nil {
		t.Fatal(err)
	}
	first := last
	allocs := testing.AllocsPerRun(100, func() {
		if err := DecodePublish(&p, fh, body, V311, &last); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per decode of a repeated topic, want 0", allocs)
	}
	if p.Topic != "sensors/a" || string(p.Payload) != "hello" || !unsafeSameString(p.Topic, first) {
		t.Fatalf("decoded %q %q", p.Topic, p.Payload)
	}
	// A different topic replaces the cache.
	raw2, _ := Append(nil, &Publish{Topic: "sensors/b"}, V311)
	if err := DecodePublish(&p, FixedHeader{Type: PUBLISH, Remaining: len(raw2) - 2}, raw2[2:], V311, &last); err != nil {
		t.Fatal(err)
	}
	if p.Topic != "sensors/b" || last != "sensors/b" || p.Payload != nil {
		t.Fatalf("decoded %q %q, cache %q", p.Topic, p.Payload, last)
	}
	// Errors are Decode's.
	if err := DecodePublish(&p, FixedHeader{Type: PUBLISH, Remaining: 1}, []byte{0}, V311, &last); err == nil {
		t.Fatal("truncated PUBLISH decoded")
	}
}

// unsafeSameString reports whether a and b share their bytes.
func unsafeSameString(a, b string) bool {
	return len(a) == len(b) && unsafe.StringData(a) == unsafe.StringData(b)
}

// TestDecodeAckMatchesDecode checks DecodeAck against Decode on every
// acknowledgement of the golden table, into a value that held another.
func TestDecodeAckMatchesDecode(t *testing.T) {
	n := 0
	for _, g := range goldenPackets {
		want, ok := g.pkt.(*Ack)
		if !ok {
			continue
		}
		n++
		t.Run(g.name, func(t *testing.T) {
			fh, err := ReadFixedHeader(bytes.NewReader(g.raw))
			if err != nil {
				t.Fatal(err)
			}
			a := &Ack{Kind: PUBREL, PacketID: 7, ReasonCode: 0x80, Properties: Properties{ReasonString: "stale"}}
			if err := DecodeAck(a, fh, g.raw[len(g.raw)-fh.Remaining:], g.version); err != nil {
				t.Fatalf("DecodeAck: %v", err)
			}
			if !reflect.DeepEqual(a, want) {
				t.Fatalf("decode mismatch\n got %#v\nwant %#v", a, want)
			}
		})
	}
	if n == 0 {
		t.Fatal("no acknowledgement in the golden table")
	}
	var a Ack
	if err := DecodeAck(&a, FixedHeader{Type: PUBACK, Remaining: 2}, []byte{0, 0}, V311); err == nil {
		t.Fatal("packet identifier 0 accepted")
	}
	body := []byte{0, 9}
	if allocs := testing.AllocsPerRun(100, func() {
		_ = DecodeAck(&a, FixedHeader{Type: PUBACK, Remaining: 2}, body, V311)
	}); allocs != 0 || a.PacketID != 9 {
		t.Fatalf("%v allocations, packet ID %d", allocs, a.PacketID)
	}
}
