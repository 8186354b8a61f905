package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
)

// pending is how many timers wait on c.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// A publisher held by several subscribers that take nothing waits for the
// slow-consumer timeout once, not once per subscriber: every one of them
// began to block with the same publish, so all meet the policy together.
func TestStuckSubscribersHoldPublisherOneTimeout(t *testing.T) {
	const timeout = 10 * time.Second
	lim := config.Default().Limits
	lim.MaxInflight, lim.MaxQueued = 1, 1
	b := New(lim, nil)
	clk := newFakeClock()
	b.SetClock(clk)
	b.SetFlow(config.SlowConsumer{Timeout: timeout, Policy: "disconnect"}, nil, 0)
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	lb := serveLoopback(t, b)
	t.Cleanup(lb.stop)

	const stuck = 3
	for i := range stuck {
		s := dialRaw(t, lb.addr, packet.V5)
		s.connect(fmt.Sprintf("stuck-%d", i), true, 0)
		s.mustSend(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "t", QoS: 1}}})
		s.read() // SUBACK; then it reads and acknowledges nothing
	}
	pub := dialRaw(t, lb.addr, packet.V5)
	pub.connect("pub", true, 0)
	// The first fills each window; the second, queued, each queue.
	if code := pub.pub1(1, "t", "x"); code != 0 {
		t.Fatalf("PUBACK 1: reason %#x", code)
	}
	timers := clk.pending()
	pub.mustSend(&packet.Publish{QoS: 1, PacketID: 2, Topic: "t", Payload: []byte("x")})
	waitFor(t, "the publisher held", func() bool { return b.Flow.Holds.Load() == 1 })
	waitFor(t, "the hold's slow-consumer timer", func() bool { return clk.pending() > timers })

	clk.Advance(timeout - time.Millisecond)
	if n := b.Flow.SlowDisconnect.Load(); n != 0 {
		t.Fatalf("%d slow consumers disconnected before the timeout", n)
	}
	clk.Advance(time.Millisecond)
	waitFor(t, "every stuck subscriber disconnected", func() bool { return b.Flow.SlowDisconnect.Load() == stuck })
	if code := pub.ack(packet.PUBACK, 2); code != 0 {
		t.Fatalf("held PUBACK: reason %#x", code)
	}
}
