package session

import (
	"bytes"
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

// TestSharedEncodingLargePayload checks the bytes of deliveries that share
// a message's encoding, below and above headOnlyPayload (where the shared
// encoding holds the head alone): AppendPacket, AppendHead's head plus
// payload, and Size all agree with encoding the PUBLISH directly.
func TestSharedEncodingLargePayload(t *testing.T) {
	for _, n := range []int{100, headOnlyPayload - 1, headOnlyPayload, 70000} {
		payload := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, n/7+1)[:n]
		for _, v := range []byte{packet.V311, packet.V5} {
			exp := uint32(60)
			m := &Message{Topic: "s/t", Payload: payload, Props: packet.Properties{ContentType: "x", MessageExpiry: &exp}}
			for _, o := range []*Outgoing{
				{Msg: m},
				{Msg: m, QoS: 1, PacketID: 513, Dup: true, Retain: true},
				{Msg: m, QoS: 2, PacketID: 7},
			} {
				p := packet.Publish{Topic: m.Topic, Payload: payload, QoS: o.QoS, Dup: o.Dup, Retain: o.Retain, PacketID: o.PacketID}
				if v == packet.V5 {
					p.Properties = m.Props
				}
				want, err := packet.Append([]byte{9}, &p, v)
				if err != nil {
					t.Fatal(err)
				}
				got, err := o.AppendPacket([]byte{9}, v)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("payload %d, version %d, QoS %d: AppendPacket differs (err %v)", n, v, o.QoS, err)
				}
				head, rest, err := o.AppendHead([]byte{9}, v, 1)
				if err != nil || rest == nil || !bytes.Equal(append(head, rest...), want) {
					t.Fatalf("payload %d, version %d, QoS %d: AppendHead differs (err %v)", n, v, o.QoS, err)
				}
				if size, err := o.Size(v); err != nil || size != len(want)-1 {
					t.Fatalf("payload %d, version %d, QoS %d: Size %d, want %d (err %v)", n, v, o.QoS, size, len(want)-1, err)
				}
			}
			if w := m.enc[1][0].Load(); v == packet.V5 && w != nil && w.head != (n >= headOnlyPayload) {
				t.Fatalf("payload %d: shared encoding head-only %v", n, w.head)
			}
		}
	}
}
