package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
)

// Fan-in across nodes to a subscriber that reads, slowly: publishers on
// u1 run as far ahead as their acknowledgements let them, a persistent
// session on u2 takes one message at a time. Every message a publisher
// had a PUBACK for must reach the subscriber, and the subscriber's queue
// on u2 must stay bounded: the publishers are held back across the
// backplane, as they are on one node (docs/flow-control.md).
//
// Not parallel: beside three other clusters on a starved 2-core -race
// run, u2 fell so far behind that the relayed messages let the queue
// pass the bound below (612 against 418 once).
func TestCrossNodeFanInSlowSubscriberNoLoss(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("QoS%d", qos), func(t *testing.T) { crossNodeFanIn(t, qos, false) })
	}
}

// The same with a clean session: its messages cross once, unconfirmed,
// and its node tells the publishers' node to pause them while it is full
// (pause.go). What was on its way meanwhile (u1 forwards faster than a
// starved u2 takes in: up to 2,700 messages were seen) is kept past the
// bound, up to the safety net of 64 times it: 8,000 messages against a
// safety net of 6,400, which publishers not held back would pass. Without
// keeping them, u2 dropped what passed four times the bound.
func TestCrossNodeFanInCleanSubscriberNoLoss(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("QoS%d", qos), func(t *testing.T) { crossNodeFanIn(t, qos, true) })
	}
}

func crossNodeFanIn(t *testing.T, qos byte, clean bool) {
	const (
		// 800 outstanding against a bound of 10 (100 for a clean session).
		pubs, window = 4, 200
		receiveMax   = 5
	)
	bound, subID, perPub, pace := 10, "xnode-slow", 500, 500*time.Microsecond
	if clean {
		// Paced as it may be: what bounds this run's time is how fast
		// the paused publishers are let go again, not the subscriber.
		bound, subID, perPub, pace = 100, "xnode-slow-clean", 2000, time.Millisecond
	}
	nodes := startNodes(t, 2, func(i int, b *broker.Broker) {
		if i == 1 {
			b.SetQueueLimits(subID, bound, 0)
			// It reads all along: a starved -race run must not have it
			// taken for a stuck one.
			b.SetFlow(config.SlowConsumer{Policy: "disconnect", Timeout: time.Hour}, nil, 0)
		}
	})
	a, b := nodes[0], nodes[1]

	var mu sync.Mutex
	got := make(map[string]int)
	var slowDown atomic.Bool
	slowDown.Store(true)
	nc, err := net.DialTimeout("tcp", b.addr, brokertest.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	sub := paho.NewClient(paho.ClientConfig{
		ClientID:      subID,
		Conn:          nc,
		PacketTimeout: brokertest.Patience(t),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			mu.Lock()
			got[string(pr.Packet.Payload)]++
			mu.Unlock()
			if slowDown.Load() {
				// The subscriber's pace: slower than the publishers,
				// never stopped.
				time.Sleep(pace)
			}
			return true, nil
		}},
	})
	expiry, rm := uint32(300), uint16(receiveMax)
	if clean {
		expiry = 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := sub.Connect(ctx, &paho.Connect{ClientID: subID, CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &rm}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Disconnect(&paho.Disconnect{}); nc.Close() })
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "xf/#", QoS: qos}}}); err != nil {
		t.Fatal(err)
	}
	if clean {
		for i := range pubs {
			waitInterest(t, a, fmt.Sprintf("xf/%d", i))
		}
	} else {
		waitIndexed(t, a, "xf/0", "u2")
	}

	// The subscriber's queue on u2, sampled while the publishers run.
	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			_, q := b.b.QueueTotals()
			if int64(q) > peak.Load() {
				peak.Store(int64(q))
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	var wg sync.WaitGroup
	acked := make([][]string, pubs)
	errs := make(chan error, pubs)
	for i := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			acked[i], err = pipelinedPublish(a.addr, fmt.Sprintf("xnode-pub-%d", i), fmt.Sprintf("xf/%d", i), qos, perPub, window, brokertest.Patience(t))
			if err != nil {
				errs <- fmt.Errorf("publisher %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	slowDown.Store(false)

	var want []string
	for _, ps := range acked {
		want = append(want, ps...)
	}
	var missing []string
	brokertest.WaitFor(t, func() error {
		mu.Lock()
		defer mu.Unlock()
		missing = missing[:0]
		for _, p := range want {
			if got[p] == 0 {
				missing = append(missing, p)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d acknowledged messages never reached the subscriber (dropped on u2: %+v, first missing %v)",
				len(missing), len(want), b.b.Stats.Dropped.Load(), missing[:min(5, len(missing))])
		}
		return nil
	})
	if len(want) != pubs*perPub {
		t.Fatalf("%d of %d messages acknowledged", len(want), pubs*perPub)
	}
	if qos == 2 {
		mu.Lock()
		for p, c := range got {
			if c > 1 {
				t.Errorf("QoS 2: %s delivered %d times", p, c)
			}
		}
		mu.Unlock()
	}
	// The bound: what the held publishers may add past it (their held
	// acknowledgements), not what they could send. A message u2 was too
	// far behind to even answer for within the confirmation wait (a
	// starved -race run) is relayed, and its publisher let go: one more
	// each.
	relayed := a.n.rel.relayed.Load()
	limit := int64(bound+pubs*64) + int64(relayed)
	if clean {
		// Unconfirmed: what reached u2 before its notice reached u1 is
		// kept too, up to the safety net.
		limit = int64(bound * session.HeldLimit)
	}
	if peak.Load() > limit {
		t.Fatalf("the subscriber's queue on u2 reached %d messages, want at most %d (%d relayed)", peak.Load(), limit, relayed)
	}
	if b.b.Flow.Holds.Load() == 0 {
		t.Fatal("no publisher was held back across nodes: the loop did not fill the queue")
	}
	if clean && a.n.pause.held.Load() == 0 {
		t.Fatal("no publish on u1 waited for u2's full session")
	}
	t.Logf("%d messages, peak queue %d, %d relayed, %d holds on u2, %d publishes paused on u1", len(want), peak.Load(), a.n.rel.relayed.Load(), b.b.Flow.Holds.Load(), a.n.pause.held.Load())
}

// pipelinedPublish connects an MQTT 3.1.1 client to addr and publishes
// count messages "<clientID>-<i>" on topic at qos (1 or 2), up to window
// of them unacknowledged (QoS 2: not completed) at a time. It returns the
// payloads acknowledged (QoS 2: by PUBREC).
func pipelinedPublish(addr, clientID, topic string, qos byte, count, window int, patience time.Duration) ([]string, error) {
	nc, err := net.DialTimeout("tcp", addr, patience)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	write := func(p packet.Packet) error {
		buf, err := packet.Append(nil, p, packet.V311)
		if err != nil {
			return err
		}
		nc.SetWriteDeadline(time.Now().Add(patience))
		_, err = nc.Write(buf)
		return err
	}
	read := func() (packet.Packet, error) {
		nc.SetReadDeadline(time.Now().Add(patience))
		fh, err := packet.ReadFixedHeader(br)
		if err != nil {
			return nil, err
		}
		body := make([]byte, fh.Remaining)
		if _, err := io.ReadFull(br, body); err != nil {
			return nil, err
		}
		return packet.Decode(fh, body, packet.V311)
	}
	if err := write(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: clientID, KeepAlive: 0}); err != nil {
		return nil, err
	}
	if p, err := read(); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	} else if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode != 0 {
		return nil, fmt.Errorf("connect refused: %+v", p)
	}
	payload := func(i int) string { return fmt.Sprintf("%s-%d", clientID, i) }
	var acked []string
	outstanding := 0
	readAck := func() error {
		p, err := read()
		if err != nil {
			return fmt.Errorf("%d acknowledged, %d outstanding: %w", len(acked), outstanding, err)
		}
		ack, ok := p.(*packet.Ack)
		switch {
		case !ok:
			return fmt.Errorf("unexpected %T", p)
		case ack.Kind == packet.PUBACK && qos == 1, ack.Kind == packet.PUBREC && qos == 2:
			// In order [MQTT-4.6.0-2]: packet ID i+1 is message i.
			acked = append(acked, payload(int(ack.PacketID)-1))
			if qos == 2 {
				return write(&packet.Ack{Kind: packet.PUBREL, PacketID: ack.PacketID})
			}
			outstanding--
		case ack.Kind == packet.PUBCOMP && qos == 2:
			outstanding--
		default:
			return fmt.Errorf("unexpected %v", ack.Kind)
		}
		return nil
	}
	for i := range count {
		for outstanding == window {
			if err := readAck(); err != nil {
				return acked, err
			}
		}
		if err := write(&packet.Publish{QoS: qos, Topic: topic, PacketID: uint16(i + 1), Payload: []byte(payload(i))}); err != nil {
			return acked, err
		}
		outstanding++
	}
	for outstanding > 0 {
		if err := readAck(); err != nil {
			return acked, err
		}
	}
	write(&packet.Disconnect{})
	return acked, nil
}

// heldReply is a node's answer that it holds message seq and confirms it
// once its sessions have room (flow.go); final: the confirmation itself.
func heldReply(seq uint64, node string, final bool) *nats.Msg {
	msg := nats.NewMsg("reply")
	if !final {
		msg.Header.Set(hdrHeld, "1")
	}
	msg.Data = append(binary.BigEndian.AppendUint64(nil, seq), node...)
	return msg
}

// A message a node says it holds is neither relayed after the
// confirmation wait nor acknowledged to its publisher until that node
// confirms it, or is down, or stops saying it holds it for holdLapse.
func TestHeldMessageWaitsForConfirmation(t *testing.T) {
	for _, end := range []string{"confirmed", "down", "lapsed"} {
		t.Run(end, func(t *testing.T) {
			n := &Node{log: slog.New(slog.DiscardHandler)}
			n.rel.init(1)
			start := time.Now()
			f := &forwarded{need: map[string]bool{"u2": false}, at: start, done: make(chan struct{})}
			n.rel.pend[7] = f
			n.confirmed(heldReply(7, "u2", false))
			settled := func() bool {
				select {
				case <-f.done:
					return true
				default:
					return false
				}
			}
			// Past the confirmation wait: not relayed (need stays false),
			// not settled.
			n.relayDue(start.Add(confirmWait+time.Second), nil, false)
			n.rel.mu.Lock()
			relaying, waiting := f.need["u2"]
			n.rel.mu.Unlock()
			if relaying || !waiting || settled() {
				t.Fatalf("held message: relaying %v, waiting %v, settled %v", relaying, waiting, settled())
			}
			switch end {
			case "confirmed":
				n.confirmed(heldReply(7, "u2", true))
			case "down":
				n.relayDue(time.Now(), map[string]bool{"u2": true}, false)
			case "lapsed":
				n.relayDue(time.Now().Add(holdLapse), nil, false)
			}
			if !settled() {
				t.Fatalf("%s: the publisher still waits", end)
			}
		})
	}
}

// A subscriber on another node that takes nothing holds its publishers
// for slow_consumer.timeout, then meets the policy (disconnect), and the
// publishers are let go: the policy keeps its meaning across nodes.
func TestCrossNodeStuckSubscriberMeetsPolicy(t *testing.T) {
	const subID = "xnode-stuck"
	nodes := startNodes(t, 2, func(i int, b *broker.Broker) {
		if i == 1 {
			b.SetQueueLimits(subID, 10, 0)
			b.SetFlow(config.SlowConsumer{Policy: "disconnect", Timeout: 300 * time.Millisecond}, nil, 0)
		}
	})
	a, b := nodes[0], nodes[1]
	s := brokertest.Dial(t, b.addr, packet.V5)
	expiry, rm := uint32(300), uint16(1)
	s.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: subID, KeepAlive: 60,
		Properties: packet.Properties{SessionExpiry: &expiry, ReceiveMaximum: &rm}})
	if ack, ok := s.Read().(*packet.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v", ack)
	}
	s.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "xs/#", QoS: 1}}})
	if _, ok := s.Read().(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	waitIndexed(t, a, "xs/0", "u2")

	// It reads nothing from now on. 100 messages against a window of 1
	// and a queue of 10: every one is acknowledged all the same.
	acked, err := pipelinedPublish(a.addr, "xnode-stuck-pub", "xs/0", 1, 100, 100, brokertest.Patience(t))
	if err != nil || len(acked) != 100 {
		t.Fatalf("%d of 100 acknowledged: %v", len(acked), err)
	}
	if n := b.b.Flow.SlowDisconnect.Load(); n != 1 {
		t.Fatalf("%d slow-consumer disconnects on u2, want 1", n)
	}
	if b.b.Flow.Holds.Load() == 0 {
		t.Fatal("the publisher was never held")
	}
}

// A message no node confirmed, which the relay stream cannot take (no
// leader or quorum; here, not open), is not acknowledged to its
// publisher past spillWarn: the write is retried, counted and logged, and
// the publisher waits until the stream takes it or the node stops (when
// its clients are gone already). It was acknowledged after 10 s before.
func TestUnrelayedMessageIsNotAcknowledged(t *testing.T) {
	old := spillWarn
	spillWarn = 50 * time.Millisecond
	t.Cleanup(func() { spillWarn = old })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n := &Node{log: slog.New(slog.DiscardHandler), ctx: ctx}
	n.rel.init(1)
	f := &forwarded{id: "m", data: []byte("x"), targets: map[string][]string{"u2": {"c"}},
		need: map[string]bool{"u2": true}, at: time.Now(), done: make(chan struct{})}
	n.rel.pend[7] = f
	spilled := make(chan struct{})
	go func() { defer close(spilled); n.spill(7, f, "u2") }()
	for n.rel.failed.Load() == 0 {
		select {
		case <-f.done:
			t.Fatal("acknowledged while the relay stream could not take the message")
		case <-ctx.Done():
			t.Fatal("the write still retried after spillWarn was not counted")
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case <-f.done:
		t.Fatal("acknowledged past spillWarn with the message nowhere")
	default:
	}
	cancel() // the node stops
	<-spilled
}

// A relay stream message names at most relayTargets clients and
// relayTargetBytes of them, and at least one: long client IDs cannot make
// it too large for the stream, which would refuse it for good.
func TestRelayPartBounds(t *testing.T) {
	many := make([]string, 600)
	for i := range many {
		many[i] = fmt.Sprintf("c%d", i)
	}
	if got := len(relayPart(many)); got != relayTargets {
		t.Errorf("600 short client IDs: a part of %d, want %d", got, relayTargets)
	}
	long := make([]string, 10)
	for i := range long {
		long[i] = strings.Repeat("x", 5000)
	}
	part := relayPart(long)
	size := 0
	for _, c := range part {
		size += len(c)
	}
	if len(part) == 0 || size > relayTargetBytes {
		t.Errorf("10 client IDs of 5,000 bytes: a part of %d (%d bytes), want 1 to %d bytes", len(part), size, relayTargetBytes)
	}
	huge := []string{strings.Repeat("y", 65535)}
	if got := len(relayPart(huge)); got != 1 {
		t.Errorf("one client ID longer than the bound: a part of %d, want 1", got)
	}
	if !refusedForGood(fmt.Errorf("publish: %w", nats.ErrMaxPayload)) ||
		!refusedForGood(&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum}) ||
		refusedForGood(errors.New("nats: no response from stream")) {
		t.Error("refusedForGood: a too-large message is refused for good, an unavailable stream is not")
	}
}
