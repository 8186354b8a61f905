package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// flowWait bounds the waits of the flow-control tests: long enough for a
// slow -race run on a busy machine, derived from the test's deadline when
// it has a nearer one.
func flowWait(t *testing.T) time.Duration {
	d := 2 * time.Minute
	if dl, ok := t.Deadline(); ok && time.Until(dl)/2 < d {
		d = time.Until(dl) / 2
	}
	return d
}

// fanIn is a closed loop of publishers on fanin/<i> and one subscriber on
// fanin/+: each publisher runs at most lead messages ahead of what the
// subscriber has received from it, with at most window unacknowledged.
type fanIn struct {
	mu   sync.Mutex
	cond *sync.Cond
	got  []int // messages received, by publisher
	seen []map[int]int
	dups int
	bad  string
}

func newFanIn(pubs int) *fanIn {
	f := &fanIn{got: make([]int, pubs), seen: make([]map[int]int, pubs)}
	for i := range f.seen {
		f.seen[i] = map[int]int{}
	}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *fanIn) receive(topic string, payload []byte) {
	var pub int
	if _, err := fmt.Sscanf(topic, "fanin/%d", &pub); err != nil || len(payload) < 4 {
		f.mu.Lock()
		f.bad = fmt.Sprintf("unexpected message %q", topic)
		f.mu.Unlock()
		return
	}
	seq := int(binary.BigEndian.Uint32(payload))
	f.mu.Lock()
	if f.seen[pub][seq]++; f.seen[pub][seq] > 1 {
		f.dups++
	} else {
		f.got[pub]++
	}
	f.cond.Broadcast()
	f.mu.Unlock()
}

// waitFor waits until cond holds (under f.mu) or the deadline passes.
func (f *fanIn) waitFor(deadline time.Time, cond func() bool) bool {
	stop := time.AfterFunc(time.Until(deadline), func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	defer stop.Stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		f.cond.Wait()
	}
	return true
}

// The fan-in closed loop that lost 39-46% of acknowledged QoS 1 messages
// under the old queue policy: 8 publishers (paho.mqtt.golang, MQTT 3.1.1)
// each up to 500 messages ahead of one subscriber (paho.golang, MQTT 5),
// with queue bounds far below what the publishers have outstanding. Every
// message arrives, once, at QoS 0, 1 and 2, with the durable store: the
// publishers are held back instead.
func TestFanInClosedLoopNoLoss(t *testing.T) {
	t.Parallel()
	const pubs, perPub, lead, window = 8, 1500, 500, 64
	for _, qos := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("QoS%d", qos), func(t *testing.T) {
			t.Parallel() // a broker of its own: only the package's -parallel bounds them
			srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
				// Small bounds: 8 x 500 outstanding messages cannot fit.
				c.Limits.MaxInflight = 20
				c.Limits.MaxQueued = 100
				c.Limits.MaxQueuedBytes = 16 << 10
				// The subscriber reads all along; a starved -race run must
				// not have it taken for a stuck one.
				c.SlowConsumer.Timeout = time.Hour
			})
			f := newFanIn(pubs)
			sub := testutil.DialPahoWith(t, addr, "fanin-sub", func(p *paho.Publish) { f.receive(p.Topic, p.Payload) })
			sub.Sub(t, paho.SubscribeOptions{Topic: "fanin/+", QoS: qos})

			deadline := time.Now().Add(flowWait(t))
			payload := func(seq int) []byte {
				b := make([]byte, 256) // large enough that the loop outgrows socket buffers
				binary.BigEndian.PutUint32(b, uint32(seq))
				return b
			}
			var wg sync.WaitGroup
			errs := make(chan error, pubs)
			for i := range pubs {
				c := v3Connect(t, addr, fmt.Sprintf("fanin-pub-%d", i), nil)
				wg.Add(1)
				go func() {
					defer wg.Done()
					topic := fmt.Sprintf("fanin/%d", i)
					var toks []mqtt.Token
					for seq := range perPub {
						if !f.waitFor(deadline, func() bool { return seq-f.got[i] < lead }) {
							errs <- fmt.Errorf("publisher %d: subscriber stuck at %d of %d sent", i, f.got[i], seq)
							return
						}
						if seq >= window {
							if tok := toks[seq-window]; !tok.WaitTimeout(time.Until(deadline)) || tok.Error() != nil {
								errs <- fmt.Errorf("publisher %d: message %d not acknowledged: %v", i, seq-window, tok.Error())
								return
							}
						}
						toks = append(toks, c.Publish(topic, qos, false, payload(seq)))
					}
					for _, tok := range toks[max(0, len(toks)-window):] {
						if !tok.WaitTimeout(time.Until(deadline)) || tok.Error() != nil {
							errs <- fmt.Errorf("publisher %d: not acknowledged: %v", i, tok.Error())
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			all := f.waitFor(deadline, func() bool {
				for _, n := range f.got {
					if n < perPub {
						return false
					}
				}
				return true
			})
			f.mu.Lock()
			defer f.mu.Unlock()
			if !all || f.bad != "" {
				t.Fatalf("received %v of %d per publisher (%s); dropped %v", f.got, perPub, f.bad, labelledMetric(t, srv, "mqtt_messages_dropped_by_reason_total"))
			}
			if qos == 2 && f.dups > 0 {
				t.Fatalf("QoS 2: %d duplicates", f.dups)
			}
			if d := metric(t, srv, "mqtt_messages_dropped_total"); d != 0 {
				t.Fatalf("%v messages dropped", d)
			}
			if h := metric(t, srv, "mqtt_flow_holds_total"); h == 0 {
				t.Fatal("no publisher was held back: the loop did not fill the queues")
			}
		})
	}
}

// A subscriber that stops reading holds its publisher back for at most
// slow_consumer.timeout; then the policy applies: disconnect (v5 reason
// 0x97, its queue no longer holds anyone) or drop_newest (it stays, and
// what does not fit is dropped and counted). A subscriber of the same
// topic that reads gets every message in order, at QoS 1 and QoS 0. The
// stuck one is a WebSocket client.
func TestStuckSubscriberPolicies(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"disconnect", "drop_newest", "drop_oldest"} {
		for _, qos := range []byte{1, 0} {
			t.Run(fmt.Sprintf("%s/QoS%d", policy, qos), func(t *testing.T) {
				t.Parallel() // a broker of its own: only the package's -parallel bounds them
				srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
					c.Store = "memory"
					c.Limits.MaxInflight = 10
					c.Limits.MaxQueued = 100
					c.Limits.MaxQueuedBytes = 1 << 20
					c.SlowConsumer.Timeout = 300 * time.Millisecond
					c.SlowConsumer.Policy = policy
				})
				topic := fmt.Sprintf("stuck/%d", qos)
				slow := testutil.NewRaw(t, dialWS(t, srv, nil), packet.V5)
				slow.Connect("stuck-ws", true)
				slow.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: topic, QoS: qos}}})
				if _, ok := slow.Read().(*packet.Suback); !ok {
					t.Fatal("no SUBACK")
				}
				fast, _ := dialV5(t, addr, "fast-tcp", nil)
				fast.sub(t, paho.SubscribeOptions{Topic: topic, QoS: qos})

				pub, _ := dialV5(t, addr, "pub", nil)
				const n = 1000
				payload := make([]byte, 16<<10) // far more than the stuck socket's buffers take
				for i := range n {
					binary.BigEndian.PutUint32(payload, uint32(i))
					pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
					m := fast.expect(t)
					if got := binary.BigEndian.Uint32(m.Payload); got != uint32(i) {
						t.Fatalf("fast subscriber: message %d, want %d", got, i)
					}
				}
				actions := labelledMetric(t, srv, "mqtt_flow_slow_consumer_actions_total")
				switch policy {
				case "disconnect":
					if actions["disconnect"] != 1 {
						t.Fatalf("slow-consumer actions %v, want one disconnect", actions)
					}
					// Closed; with the reason when the socket had room for
					// it (a QoS 0 flood can fill it: the reason then stays
					// behind it, and the connection is cut).
					if d := drainUntilClosed(slow); (d != nil || qos == 1) && (d == nil || d.ReasonCode != packet.QuotaExceeded) {
						t.Fatalf("stuck client's last packet %+v, want DISCONNECT 0x97", d)
					}
				default:
					if actions["drop"] == 0 {
						t.Fatalf("slow-consumer actions %v, want a drop policy put in force", actions)
					}
					if d := metric(t, srv, "mqtt_messages_dropped_total"); d == 0 {
						t.Fatal("no drop counted for the stuck subscriber")
					}
					// Still connected, and gets what was kept once it reads.
					p, err := slow.Next(5 * time.Second)
					if err != nil {
						t.Fatalf("stuck subscriber: %v", err)
					}
					if pp, ok := p.(*packet.Publish); !ok || binary.BigEndian.Uint32(pp.Payload) != 0 {
						t.Fatalf("stuck subscriber's first packet: %+v", p)
					}
				}
			})
		}
	}
}

// drainUntilClosed reads a raw connection until it ends and returns the
// DISCONNECT it ended with, if any.
func drainUntilClosed(r *testutil.Raw) *packet.Disconnect {
	for {
		p, err := r.Next(10 * time.Second)
		if err != nil {
			return nil
		}
		if d, ok := p.(*packet.Disconnect); ok {
			return d
		}
	}
}

// While a subscriber that takes nothing holds one publisher back (a long
// slow-consumer timeout), a publisher whose messages do not go to it keeps
// going: its 300 QoS 1 publishes and their deliveries complete meanwhile.
func TestHeldPublisherDoesNotSlowOthers(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxInflight = 5
		c.Limits.MaxQueued = 20
		c.SlowConsumer.Timeout = time.Hour
	})
	stuck, _ := v5Raw(t, addr, "stuck", true, 0)
	v5RawSub(t, stuck, 1, 0, packet.Subscription{Filter: "held/#", QoS: 1})
	heldPub, _ := dialV5(t, addr, "held-pub", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acked := make(chan int, 100)
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := heldPub.Publish(ctx, &paho.Publish{Topic: "held/x", QoS: 1, Payload: []byte("x")}); err != nil {
				return
			}
			acked <- i
		}
	}()
	// The stuck subscriber's window (5) and queue (20) fill; then the
	// publisher is held.
	waitUntil(t, "the publisher to the stuck subscriber held", func() bool { return metric(t, srv, "mqtt_flow_holds_total") > 0 })
	sub, _ := dialV5(t, addr, "free-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "free/#", QoS: 1})
	pub, _ := dialV5(t, addr, "free-pub", nil)
	for i := range 300 {
		pub.pub(t, &paho.Publish{Topic: "free/x", QoS: 1, Payload: []byte(fmt.Sprint(i))})
		if m := sub.expect(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("free subscriber: %q, want %d", m.Payload, i)
		}
	}
	// The held publisher is still held: its acknowledgements stopped.
	n := len(acked)
	if n > 5+20+2 {
		t.Fatalf("held publisher got %d acknowledgements, more than the stuck subscriber holds", n)
	}
	last := -1
	for range n {
		last = <-acked
	}
	// Once the stuck subscriber reads and acknowledges, it goes on: a
	// publish after those already acknowledged is.
	for range 30 {
		p := v5Read[*packet.Publish](t, stuck)
		stuck.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	select {
	case i := <-acked:
		if i <= last {
			t.Fatalf("acknowledgement %d after %d", i, last)
		}
	case <-time.After(flowWait(t)):
		t.Fatal("held publisher not released after the subscriber read")
	}
}

// Latest-value delivery: a v5 subscriber that asks for it with the user
// property latest-value=true, and is behind (it acknowledges nothing for a
// while), gets the first message, then only the newest of each topic; a
// 3.1.1 subscriber gets it from a latest_value rule, at QoS 0.
func TestLatestValueDelivery(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxInflight = 1
		c.LatestValue = []starling.LatestValueRule{{Filter: "rule/#", Listener: "tcp"}}
	})
	sub, _ := v5Raw(t, addr, "lv5", true, 0)
	sub.Send(&packet.Subscribe{PacketID: 1, Properties: packet.Properties{UserProperties: []packet.UserProperty{{Key: "latest-value", Value: "true"}}},
		Subscriptions: []packet.Subscription{{Filter: "lv/#", QoS: 1}}})
	v5Read[*packet.Suback](t, sub)
	pub, _ := dialV5(t, addr, "lv-pub", nil)
	for i := range 50 {
		for _, tp := range []string{"lv/a", "lv/b", "lv/c"} {
			pub.pub(t, &paho.Publish{Topic: tp, QoS: 1, Payload: []byte(fmt.Sprint(i))})
		}
	}
	got := map[string]string{}
	var order []string
	for range 4 {
		p := v5Read[*packet.Publish](t, sub)
		got[p.Topic] = string(p.Payload)
		order = append(order, p.Topic+"="+string(p.Payload))
		sub.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	v5Silent(t, sub, v5Quiet)
	if order[0] != "lv/a=0" || got["lv/a"] != "49" || got["lv/b"] != "49" || got["lv/c"] != "49" {
		t.Fatalf("latest-value subscriber got %v, want lv/a=0, then 49 of each topic", order)
	}
	if c := metric(t, srv, "mqtt_flow_conflated_total"); c != 150-4 {
		t.Fatalf("conflated %v, want %d", c, 150-4)
	}

	// 3.1.1 by rule, QoS 0: a subscriber that stops reading while large
	// messages come; once it reads, each topic's last value arrives, and
	// values only go up.
	raw := v3RawConnect(t, addr, packet.V311, "lv3", true)
	v3RawSub(t, raw, 1, "rule/#", 0)
	big := make([]byte, 64<<10)
	const rounds = 200
	for i := range rounds {
		for _, tp := range []string{"rule/a", "rule/b"} {
			binary.BigEndian.PutUint32(big, uint32(i))
			pub.pub(t, &paho.Publish{Topic: tp, QoS: 0, Payload: big})
		}
	}
	pub.pub(t, &paho.Publish{Topic: "rule/end", QoS: 0, Payload: []byte("end")})
	last := map[string]uint32{}
	count := 0
	for {
		p := raw.Read().(*packet.Publish)
		if p.Topic == "rule/end" {
			break
		}
		count++
		v := binary.BigEndian.Uint32(p.Payload)
		if prev, ok := last[p.Topic]; ok && v <= prev {
			t.Fatalf("%s: value %d after %d", p.Topic, v, prev)
		}
		last[p.Topic] = v
	}
	if last["rule/a"] != rounds-1 || last["rule/b"] != rounds-1 || count >= 2*rounds {
		t.Fatalf("3.1.1 latest-value subscriber: %d messages, last %v; want fewer than %d and the last of each", count, last, 2*rounds)
	}
}

// Sampled delivery, as the dashboard's topic tree asks for it: with the
// user property latest-value=<interval>, a QoS 0 subscriber gets at most
// one message per topic per interval, the newest, and the last one of each
// topic arrives after the burst ends.
func TestSampledDelivery(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Store = "memory" })
	sub, _ := v5Raw(t, addr, "sampled", true, 0)
	sub.Send(&packet.Subscribe{PacketID: 1, Properties: packet.Properties{UserProperties: []packet.UserProperty{{Key: "latest-value", Value: "1h"}}},
		Subscriptions: []packet.Subscription{{Filter: "s/#", QoS: 0}}})
	v5Read[*packet.Suback](t, sub)
	pub, _ := dialV5(t, addr, "s-pub", nil)
	const n = 500
	for i := range n {
		for _, tp := range []string{"s/a", "s/b"} {
			pub.pub(t, &paho.Publish{Topic: tp, QoS: 1, Payload: []byte(fmt.Sprint(i))})
		}
	}
	// The interval is capped at a minute; the first message goes at once,
	// the rest wait for the interval: nothing more arrives meanwhile.
	if p := v5Read[*packet.Publish](t, sub); p.Topic != "s/a" || string(p.Payload) != "0" {
		t.Fatalf("first sampled message %s=%s, want s/a=0", p.Topic, p.Payload)
	}
	v5Silent(t, sub, v5Quiet)
	// One sent, one waiting per topic; every other message replaced.
	if c := metric(t, srv, "mqtt_flow_conflated_total"); c != 2*n-1-2 {
		t.Fatalf("conflated %v, want %d", c, 2*n-1-2)
	}

}

// limits.max_total_queued_bytes: with a stuck subscriber whose own bounds
// are large, the publisher is held once the broker-wide total passes the
// bound, which the total then stays near; when the subscriber reads,
// everything arrives.
func TestGlobalQueuedBytesBound(t *testing.T) {
	t.Parallel()
	const bound = 256 << 10
	const size = 8 << 10
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxInflight = 10
		c.Limits.MaxQueued = 100000
		c.Limits.MaxQueuedBytes = 0
		c.Limits.MaxTotalQueuedBytes = bound
		c.SlowConsumer.Timeout = time.Hour
	})
	stuck, _ := v5Raw(t, addr, "g-stuck", true, 0)
	v5RawSub(t, stuck, 1, 0, packet.Subscription{Filter: "g/#", QoS: 1})
	pub := v3Connect(t, addr, "g-pub", nil)
	const n = 100 // 800 KiB: three times the bound
	toks := make([]mqtt.Token, n)
	for i := range n {
		toks[i] = pub.Publish("g/x", 1, false, make([]byte, size))
	}
	waitUntil(t, "the publisher held for the broker-wide bound", func() bool { return metric(t, srv, "mqtt_flow_global_waits_total") > 0 })
	// Held: the queue stays within the bound and one message.
	if q := metric(t, srv, "mqtt_flow_queued_bytes"); q > bound+size+16 {
		t.Fatalf("queued %v bytes, bound %d", q, bound)
	}
	for i := range n {
		p := v5Read[*packet.Publish](t, stuck)
		stuck.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
		_ = i
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(flowWait(t)) || tok.Error() != nil {
			t.Fatalf("publish %d not acknowledged: %v", i, tok.Error())
		}
	}
}

// A client that sends past the Receive Maximum is disconnected with 0x93,
// and reads that DISCONNECT although it went on sending for a while: the
// broker shuts its side and discards input before closing, instead of
// closing over unread input, which resets the connection and fails the
// client's writes (the Paho interoperability test test_flow_control2).
func TestDisconnectReasonSurvivesClientBurst(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxInflight = 5
	})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := testutil.NewRaw(t, nc, packet.V5)
	r.Connect("burst", true)
	var b []byte
	for i := range 6 { // one more QoS 2 message than Receive Maximum, no PUBREL
		b, _ = packet.Append(b, &packet.Publish{Topic: "burst/x", QoS: 2, PacketID: uint16(i + 1), Payload: []byte("x")}, packet.V5)
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	// The client goes on sending for a while before it reads anything.
	more, _ := packet.Append(nil, &packet.Publish{Topic: "burst/y", Payload: make([]byte, 512)}, packet.V5)
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
		if _, err := nc.Write(more); err != nil {
			t.Fatalf("write while the broker was closing: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	var last packet.Packet
	for {
		p, err := r.Next(10 * time.Second)
		if err != nil {
			break
		}
		last = p
		if _, ok := p.(*packet.Disconnect); ok {
			break
		}
	}
	if d, ok := last.(*packet.Disconnect); !ok || d.ReasonCode != packet.ReceiveMaximumExceeded {
		t.Fatalf("last packet %+v, want DISCONNECT 0x93", last)
	}
}

// A client's own session never holds it back (it could not take its own
// messages while held), so what it publishes to itself past its queue
// bound is bounded by the hard limit, four times the bound, and the rest
// counted as overflow.
func TestSelfPublishBounded(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxInflight = 1
		c.Limits.MaxQueued = 10
	})
	r, _ := v5Raw(t, addr, "self", true, 0)
	v5RawSub(t, r, 1, 0, packet.Subscription{Filter: "self/#", QoS: 1})
	const n = 200
	for i := range n {
		r.Send(&packet.Publish{Topic: "self/x", QoS: 1, PacketID: uint16(i + 1), Payload: []byte("x")})
	}
	acks := 0
	for acks < n { // deliveries to itself are read, never acknowledged
		if a, ok := r.Read().(*packet.Ack); ok && a.Kind == packet.PUBACK {
			acks++
		}
	}
	if q := metric(t, srv, "mqtt_messages_queued"); q > 4*10 {
		t.Fatalf("%v queued for a client publishing to itself, hard limit 40", q)
	}
	if o := labelledMetric(t, srv, "mqtt_messages_dropped_by_reason_total")["overflow"]; o < n-1-40 {
		t.Fatalf("overflow drops %v, want at least %d", o, n-1-40)
	}
}

// A client that keeps reading a QoS 0 stream but never acknowledges its
// QoS 1 messages is stuck for the publishers its QoS 1 queue holds back:
// taking QoS 0 messages does not empty that queue, so it does not count as
// progress, and the slow-consumer policy still applies within the timeout.
func TestQoS0ReadingDoesNotHideStuckQoS1(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxInflight = 2
		c.Limits.MaxQueued = 10
		c.SlowConsumer.Timeout = 300 * time.Millisecond
	})
	sub, _ := v5Raw(t, addr, "mixed", true, 0)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "q1/#", QoS: 1}, packet.Subscription{Filter: "q0/#", QoS: 0})
	// The subscriber reads everything and acknowledges nothing.
	go func() {
		for {
			if _, err := sub.Next(time.Minute); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q0, _ := dialV5(t, addr, "q0-pub", nil)
	go func() { // a steady QoS 0 stream it takes
		for ctx.Err() == nil {
			if _, err := q0.Publish(ctx, &paho.Publish{Topic: "q0/x", QoS: 0, Payload: []byte("x")}); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	q1, _ := dialV5(t, addr, "q1-pub", nil)
	go func() { // QoS 1 that fills its window and queue, then is held
		for ctx.Err() == nil {
			if _, err := q1.Publish(ctx, &paho.Publish{Topic: "q1/x", QoS: 1, Payload: []byte("x")}); err != nil {
				return
			}
		}
	}()
	waitUntil(t, "a client stuck on its QoS 1 window, reading QoS 0, taken for a slow consumer", func() bool {
		return labelledMetric(t, srv, "mqtt_flow_slow_consumer_actions_total")["disconnect"] > 0
	})
}

// slow_consumer.min_rate: a subscriber that keeps acknowledging, but at 5
// messages/s where 20 are asked for, meets the policy although it never
// goes a whole timeout without taking one.
func TestSlowConsumerMinRate(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxInflight = 1
		c.Limits.MaxQueued = 5
		c.SlowConsumer.Timeout = 500 * time.Millisecond
		c.SlowConsumer.MinRate = 20
	})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sub := testutil.NewRaw(t, nc, packet.V5)
	sub.Connect("crawler", true)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "crawl/#", QoS: 1})
	done := make(chan struct{})
	defer func() { nc.Close(); <-done }()
	go func() { // one acknowledgement every 200 ms, until the broker lets it go
		defer close(done)
		for {
			p, err := sub.Next(time.Minute)
			if err != nil {
				return
			}
			if pp, ok := p.(*packet.Publish); ok {
				time.Sleep(200 * time.Millisecond)
				b, _ := packet.Append(nil, &packet.Ack{Kind: packet.PUBACK, PacketID: pp.PacketID}, packet.V5)
				if _, err := nc.Write(b); err != nil {
					return
				}
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub, _ := dialV5(t, addr, "crawl-pub", nil)
	go func() {
		for ctx.Err() == nil {
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: "crawl/x", QoS: 1, Payload: []byte("x")}); err != nil {
				return
			}
		}
	}()
	waitUntil(t, "a subscriber below min_rate met the policy", func() bool {
		return labelledMetric(t, srv, "mqtt_flow_slow_consumer_actions_total")["disconnect"] > 0
	})
}

// waitUntil polls cond (a reading of the broker's metrics) until it holds,
// within the test's own time (flowWait).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(flowWait(t))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
