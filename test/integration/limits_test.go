package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// Per-client abuse limits answer with their reason codes.
func TestClientLimits(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Limits.PublishRate = 20 // a burst of 20, then 20/s
		c.Limits.MaxSubscriptionsPerClient = 2
		c.Limits.MaxTopicLevels = 4
	})
	r := testutil.Dial(t, addr, packet.V5)
	r.Connect("limits", true)

	r.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: "a", QoS: 1}, {Filter: "b", QoS: 1}, {Filter: "c", QoS: 1}, {Filter: "a", QoS: 0}, {Filter: "x/y/z/w/v"}}})
	sa, ok := r.Read().(*packet.Suback)
	want := []packet.ReasonCode{1, 1, packet.QuotaExceeded, 0, packet.TopicFilterInvalid}
	if !ok || len(sa.ReasonCodes) != len(want) {
		t.Fatalf("SUBACK %+v", sa)
	}
	for i := range want {
		if sa.ReasonCodes[i] != want[i] {
			t.Fatalf("SUBACK codes %v, want %v", sa.ReasonCodes, want)
		}
	}

	r.Send(&packet.Publish{Topic: strings.Repeat("l/", 5) + "x", QoS: 1, PacketID: 100})
	if a, ok := r.Read().(*packet.Ack); !ok || a.ReasonCode != packet.TopicNameInvalid {
		t.Fatalf("topic over max_topic_levels: %+v, want PUBACK 0x90", a)
	}

	// 60 publishes at once against 20/s: the last 40 are read at the rate,
	// so the 60th acknowledgement comes after about 2 s, and none is lost.
	var batch []packet.Packet
	for i := 1; i <= 60; i++ {
		batch = append(batch, &packet.Publish{Topic: "t", QoS: 1, PacketID: uint16(i), Payload: []byte("x")})
	}
	start := time.Now()
	r.Send(batch...)
	for i := 1; i <= 60; i++ {
		if a, ok := r.Read().(*packet.Ack); !ok || a.PacketID != uint16(i) || a.ReasonCode >= 0x80 {
			t.Fatalf("publish %d: %+v", i, a)
		}
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("60 publishes at 20/s acknowledged in %v: not slowed down", took)
	}
}
