package session

import (
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

// TestPooledMessageLifetime checks that a pooled message stays whole while
// any delivery holds it, goes back to its pool after the last one, and
// never does once pinned; and that unpooled messages ignore all of it.
func TestPooledMessageLifetime(t *testing.T) {
	m := NewPooled()
	m.Topic, m.Payload = "a/b", []byte("payload")
	o1, o2 := newOutgoing(), newOutgoing()
	m.Ref()
	o1.Msg = m
	m.Ref()
	o2.Msg = m
	var buf []byte
	var err error
	if buf, err = o1.AppendPacket(buf, packet.V311); err != nil {
		t.Fatal(err)
	}
	m.Unref() // the publisher's
	o1.Release()
	if m.Topic != "a/b" || string(m.Payload) != "payload" {
		t.Fatalf("message cleared while a delivery holds it: %q %q", m.Topic, m.Payload)
	}
	if buf2, err := o2.AppendPacket(nil, packet.V311); err != nil || string(buf2) != string(buf) {
		t.Fatalf("second delivery encoded % X, %v; want % X", buf2, err, buf)
	}
	o2.Release()
	if m.Topic != "" || m.Payload != nil || m.enc[0][0].Load() != nil {
		t.Fatalf("last reference dropped, message not recycled: %q", m.Topic)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a reference dropped twice did not panic")
			}
		}()
		m.Unref()
	}()

	p := NewPooled()
	p.Topic = "kept"
	p.Pin()
	p.Unref()
	if p.Topic != "kept" {
		t.Fatal("pinned message recycled")
	}

	u := &Message{Topic: "plain"}
	u.Ref()
	u.Unref()
	u.Unref()
	if u.Topic != "plain" {
		t.Fatal("unpooled message recycled")
	}
}
