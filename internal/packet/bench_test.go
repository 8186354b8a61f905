package packet

import (
	"bytes"
	"testing"
)

var benchPayload = bytes.Repeat([]byte("x"), 256)

func benchPublish(version byte) (FixedHeader, []byte, *Publish) {
	p := &Publish{QoS: 1, Topic: "sensors/building-1/floor-2/temperature", PacketID: 42, Payload: benchPayload}
	raw, err := Append(nil, p, version)
	if err != nil {
		panic(err)
	}
	r := bytes.NewReader(raw)
	fh, _ := ReadFixedHeader(r)
	return fh, raw[len(raw)-r.Len():], p
}

// BenchmarkDecodePublish should allocate only the Publish and its topic.
func BenchmarkDecodePublish(b *testing.B) {
	for _, v := range []struct {
		name    string
		version byte
	}{{"v311", V311}, {"v5", V5}} {
		b.Run(v.name, func(b *testing.B) {
			fh, body, _ := benchPublish(v.version)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(fh, body, v.version); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendPublish encodes into a reused buffer: no allocations.
func BenchmarkAppendPublish(b *testing.B) {
	alias := uint16(3)
	for _, v := range []struct {
		name    string
		version byte
		props   Properties
	}{
		{"v311", V311, Properties{}},
		{"v5", V5, Properties{}},
		{"v5-props", V5, Properties{TopicAlias: &alias, SubscriptionIDs: []int{7}, UserProperties: up("k", "v")}},
	} {
		b.Run(v.name, func(b *testing.B) {
			_, _, p := benchPublish(v.version)
			p.Properties = v.props
			dst := make([]byte, 0, 1024)
			b.SetBytes(int64(len(p.Payload)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = Append(dst[:0], p, v.version); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadFixedHeader(b *testing.B) {
	raw := []byte{0x32, 0xC4, 0x02}
	r := bytes.NewReader(raw)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(raw)
		if _, err := ReadFixedHeader(r); err != nil {
			b.Fatal(err)
		}
	}
}
