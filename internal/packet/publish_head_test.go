package packet

import (
	"bytes"
	"testing"
)

// TestAppendPublishHead checks that the head and then the payload are
// byte for byte what AppendPublish writes, for every version and with a
// packet ID and properties.
func TestAppendPublishHead(t *testing.T) {
	exp := uint32(30)
	payload := bytes.Repeat([]byte{0xA5, 0x5A, 1}, 70000) // a 3-byte remaining length
	for _, v := range []byte{V31, V311, V5} {
		for _, p := range []Publish{
			{Topic: "a/b", Payload: payload},
			{Topic: "a/b", Payload: payload[:10], QoS: 1, PacketID: 7, Retain: true, Dup: true},
			{Topic: "x", Payload: nil, QoS: 2, PacketID: 9, Properties: Properties{MessageExpiry: &exp}},
		} {
			whole, err := AppendPublish([]byte{0xEE}, &p, v)
			if err != nil {
				t.Fatal(err)
			}
			head, err := AppendPublishHead([]byte{0xEE}, &p, v)
			if err != nil {
				t.Fatal(err)
			}
			if got := append(head, p.Payload...); !bytes.Equal(got, whole) {
				t.Fatalf("version %d, %d-byte payload: head+payload differs from AppendPublish", v, len(p.Payload))
			}
		}
	}
}
