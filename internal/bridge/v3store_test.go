package bridge

import (
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// The store hands out copies: setting DUP on what Get returned, as the
// client does on reconnect, leaves the packet that was put (which its
// writer may be encoding) alone, and the stored packet round-trips.
func TestCopyStoreHandsOutCopies(t *testing.T) {
	s := newCopyStore()
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.Qos, p.MessageID, p.TopicName, p.Payload = 1, 7, "a/b", []byte("x")
	s.Put("o.7", p)
	got, ok := s.Get("o.7").(*packets.PublishPacket)
	if !ok || got == p || got.MessageID != 7 || got.TopicName != "a/b" || string(got.Payload) != "x" || got.Qos != 1 {
		t.Fatalf("Get: %+v (same packet: %v)", got, got == p)
	}
	got.Dup = true
	if p.Dup {
		t.Fatal("DUP set on the packet that was put")
	}
	s.Put("o.8", p)
	if keys := s.All(); len(keys) != 2 || keys[0] != "o.7" || keys[1] != "o.8" {
		t.Fatalf("All: %v", keys)
	}
	s.Del("o.7")
	if s.Get("o.7") != nil || len(s.All()) != 1 {
		t.Fatalf("after Del: %v", s.All())
	}
	s.Reset()
	if len(s.All()) != 0 {
		t.Fatal("Reset kept keys")
	}
}
