package integration

import (
	"sort"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// A retained message is stored and sent to a later subscriber with the
// retain flag set [MQTT-3.3.1-5, 3.3.1-8]; a subscriber that was already there
// gets it with the flag cleared [MQTT-3.3.1-9] (3.1.1).
func TestV3RetainedStoredAndDeliveredOnSubscribe(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	live := v3Connect(t, addr, "v3-ret-live", nil)
	live.sub("ret/a", 1)
	pub := v3Connect(t, addr, "v3-ret-pub", nil)
	pub.pub("ret/a", 1, true, "first")
	live.expectMsg("ret/a", "first", 1, false)

	late := v3Connect(t, addr, "v3-ret-late", nil)
	late.sub("ret/a", 1)
	late.expectMsg("ret/a", "first", 1, true)
	late.expectNone(100 * time.Millisecond)

	// Delivered at min(retained QoS, subscription QoS).
	late0 := v3Connect(t, addr, "v3-ret-late0", nil)
	late0.sub("ret/a", 0)
	late0.expectMsg("ret/a", "first", 0, true)

	// A QoS 0 retained message is retained too [MQTT-3.3.1-7].
	pub.pub("ret/zero", 0, true, "qos0")
	time.Sleep(50 * time.Millisecond) // QoS 0 has no acknowledgement to wait for
	late2 := v3Connect(t, addr, "v3-ret-late2", nil)
	late2.sub("ret/zero", 2)
	late2.expectMsg("ret/zero", "qos0", 0, true)
}

// A new retained message replaces the old one; an empty payload clears it
// [MQTT-3.3.1-10, 3.3.1-11].
func TestV3RetainedReplacedAndCleared(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub := v3Connect(t, addr, "v3-retrc-pub", nil)
	pub.pub("retrc/t", 1, true, "old")
	pub.pub("retrc/t", 2, true, "new")

	s1 := v3Connect(t, addr, "v3-retrc-s1", nil)
	s1.sub("retrc/t", 2)
	s1.expectMsg("retrc/t", "new", 2, true)
	s1.expectNone(100 * time.Millisecond)

	// The clearing publish itself is forwarded to the live subscriber, with
	// the retain flag cleared.
	pub.pub("retrc/t", 1, true, "")
	s1.expectMsg("retrc/t", "", 1, false)

	s2 := v3Connect(t, addr, "v3-retrc-s2", nil)
	s2.sub("retrc/#", 2)
	s2.expectNone(200 * time.Millisecond)

	// A non-retained publish neither stores nor replaces.
	pub.pub("retrc/t", 1, true, "kept")
	pub.pub("retrc/t", 1, false, "not retained")
	s3 := v3Connect(t, addr, "v3-retrc-s3", nil)
	s3.sub("retrc/t", 1)
	s3.expectMsg("retrc/t", "kept", 1, true)
	s3.expectNone(100 * time.Millisecond)
}

// Wildcard subscriptions receive every matching retained message, and a
// '#' subscription does not receive retained '$' topics.
func TestV3RetainedWildcard(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub := v3Connect(t, addr, "v3-retw-pub", nil)
	for _, tp := range []string{"retw/a", "retw/b", "retw/c/d", "other/x", "$test/retw"} {
		pub.pub(tp, 1, true, "v:"+tp)
	}
	s := v3Connect(t, addr, "v3-retw-sub", nil)
	s.sub("retw/+", 1)
	var got []string
	for range 2 {
		m := s.expect()
		if !m.Retained() || string(m.Payload()) != "v:"+m.Topic() {
			t.Fatalf("got %q %q retain %v", m.Topic(), m.Payload(), m.Retained())
		}
		got = append(got, m.Topic())
	}
	sort.Strings(got)
	if got[0] != "retw/a" || got[1] != "retw/b" {
		t.Fatalf("retained for retw/+: %v", got)
	}
	s.expectNone(100 * time.Millisecond)

	all := v3Connect(t, addr, "v3-retw-all", nil)
	all.sub("#", 1)
	seen := map[string]bool{}
	for range 4 {
		m := all.expect()
		seen[m.Topic()] = true
	}
	all.expectNone(150 * time.Millisecond)
	if seen["$test/retw"] || len(seen) != 4 {
		t.Fatalf("retained for '#': %v (want 4 topics, no $test/retw)", seen)
	}
}

// Retained messages are sent after SUBACK, with the retain flag, seen at the
// packet level [MQTT-3.3.1-6, 3.3.1-8] (3.1.1); a live forward of a retained publish has the
// flag cleared [MQTT-3.3.1-9] (3.1.1).
func TestV3RawRetainFlags(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub := v3RawConnect(t, addr, packet.V311, "v3-rawret-pub", true)
	pub.Send(&packet.Publish{Topic: "rawret/t", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("r1")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBACK {
		t.Fatalf("want PUBACK, got %#v", a)
	}
	sub := v3RawConnect(t, addr, packet.V311, "v3-rawret-sub", true)
	v3RawSub(t, sub, 3, "rawret/t", 1) // SUBACK comes first
	p := v3RawExpectPublish(t, sub, "rawret/t", "r1", 1)
	if !p.Retain {
		t.Fatalf("retained message delivered on subscribe without retain flag")
	}
	sub.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})

	pub.Send(&packet.Publish{Topic: "rawret/t", QoS: 1, PacketID: 2, Retain: true, Payload: []byte("r2")})
	pub.Read()
	p = v3RawExpectPublish(t, sub, "rawret/t", "r2", 1)
	if p.Retain {
		t.Fatalf("live forward of a retained publish kept the retain flag")
	}
}
