package integration

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// The pooled-message tests: QoS 0 messages, their read buffers and their
// encodings are pooled and reference counted, so a message given back while
// something still refers to it shows up as another message's topic or
// bytes. Publishers send self-checking payloads (pooled_integrity_helpers)
// at QoS 0, 1 and 2, retained now and then, to subscribers of every kind;
// every payload received anywhere must be exactly one that was published on
// its topic. Building with -tags starling_poison overwrites buffers as they
// go back to their pools, so a use after release is caught on its first
// occurrence instead of when the buffer happens to be reused.

const integPubs = 6

func integTopic(pub, seq int) string { return fmt.Sprintf("integ/%d/%d", pub, seq%5) }

// integRetained: every 37th message is retained, on one of three topics of
// its publisher.
func integRetained(seq int) bool { return seq%37 == 0 }
func integRetTopic(pub, seq int) string {
	return fmt.Sprintf("integ/%d/r%d", pub, seq/37%3)
}

func integQoS(pub, seq int) byte {
	switch (seq*7 + pub) % 6 {
	case 4:
		return 1
	case 5:
		return 2
	}
	return 0
}

// integPublish runs the publishers (MQTT 3.1.1 and 5, the latter with
// topic aliases) to the end, each message acknowledged.
func integPublish(t *testing.T, addr string, perPub int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, integPubs)
	for pub := range integPubs {
		v := []byte{packet.V311, packet.V5}[pub%2]
		c, ack, err := dialInteg(addr, v, packet.Connect{ClientID: fmt.Sprintf("integ-pub-%d", pub), CleanStart: true}, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.nc.Close()
		var aliasMax uint16
		if a := ack.Properties.TopicAliasMaximum; a != nil {
			aliasMax = min(*a, 4) // fewer than the topics: some go by name
		}
		p := newIPub(c, pub, aliasMax, 16)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range perPub {
				topic, retain := integTopic(pub, seq), integRetained(seq)
				if retain {
					topic = integRetTopic(pub, seq)
				}
				if err := p.publish(topic, seq, integQoS(pub, seq), retain); err != nil {
					errs <- err
					return
				}
			}
			if err := p.drain(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// wantAcked reports the QoS 1 and 2 messages of the publishers that tl
// has not received.
func wantAcked(tl *tally, perPub int) []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var missing []string
	for pub := range integPubs {
		for seq := range perPub {
			if integQoS(pub, seq) > 0 && tl.got[[2]int{pub, seq}] == 0 {
				missing = append(missing, fmt.Sprintf("%d/%d", pub, seq))
			}
		}
	}
	return missing
}

// waitTally waits until cond holds for tl, or the test's patience ends.
func waitTally(t *testing.T, tl *tally, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testutil.Patience(t))
	stop := time.AfterFunc(time.Until(deadline), func() {
		tl.mu.Lock()
		tl.cond.Broadcast()
		tl.mu.Unlock()
	})
	defer stop.Stop()
	for {
		if cond() {
			return
		}
		tl.mu.Lock()
		if tl.ended {
			tl.mu.Unlock()
			if cond() {
				return
			}
			t.Fatalf("%s: connection ended before %s: %v", tl.name, what, tl.errs())
		}
		if time.Now().After(deadline) {
			tl.mu.Unlock()
			t.Fatalf("%s: gave up waiting for %s", tl.name, what)
		}
		tl.cond.Wait()
		tl.mu.Unlock()
	}
}

func reportTallies(t *testing.T, ts ...*tally) {
	t.Helper()
	for _, tl := range ts {
		for _, e := range tl.errs() {
			t.Error(e)
		}
	}
}

// TestPooledPayloadIntegrity: publishers at QoS 0/1/2 (retained now and
// then) to fast 3.1.1 and 5 subscribers (one with topic aliases and
// subscription identifiers, so its deliveries are encoded apart), a slow
// latest-value subscriber (its queued QoS 0 deliveries replaced), a
// sampled one (deliveries kept past the publish), a persistent session
// that is offline meanwhile and reads its queue back afterwards, a client
// that keeps connecting, taking over its session and vanishing mid-stream,
// and clients whose wills go out when they vanish after publishing. Every
// payload anywhere is checked; the fast subscribers and the offline
// session get every QoS 1 and 2 message; the retained messages read back
// at the end are the last of each topic.
func TestPooledPayloadIntegrity(t *testing.T) {
	perPub := 600
	if testing.Short() {
		perPub = 200
	}
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxQueued = 1 << 20
		c.Limits.MaxQueuedBytes = 0
		c.SlowConsumer.Timeout = time.Hour // nobody is pushed out: all QoS 1/2 must arrive
	})
	stop := make(chan struct{})
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }) }
	var readers sync.WaitGroup
	defer readers.Wait()
	defer halt()
	run := func(c *icli, tl *tally, pace func()) {
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer tl.end()
			defer c.nc.Close()
			if err := c.receive(tl, stop, pace); err != nil {
				select {
				case <-stop:
				default:
					tl.fail("receive: %v", err)
				}
			}
		}()
	}
	must := func(c *icli, _ *packet.Connack, err error) *icli {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// The persistent session, offline while the messages come.
	off := must(dialInteg(addr, packet.V311, packet.Connect{ClientID: "integ-offline"}, 0))
	if err := off.subscribe(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "integ/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	off.send(&packet.Disconnect{})
	off.nc.Close()

	fast311 := newTally("fast 3.1.1")
	c := must(dialInteg(addr, packet.V311, packet.Connect{ClientID: "integ-fast311", CleanStart: true}, 0))
	if err := c.subscribe(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "integ/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	run(c, fast311, nil)

	fast5 := newTally("fast 5 (aliases, subscription IDs)")
	amax := uint16(3)
	c = must(dialInteg(addr, packet.V5, packet.Connect{ClientID: "integ-fast5", CleanStart: true,
		Properties: packet.Properties{TopicAliasMaximum: &amax}}, 0))
	for i, s := range []packet.Subscription{{Filter: "integ/#", QoS: 1}, {Filter: "integ/+/+", QoS: 0}} {
		if err := c.subscribe(&packet.Subscribe{PacketID: uint16(i + 1), Properties: packet.Properties{SubscriptionIDs: []int{7 + i}},
			Subscriptions: []packet.Subscription{s}}); err != nil {
			t.Fatal(err)
		}
	}
	run(c, fast5, nil)

	latest := newTally("slow latest-value")
	c = must(dialInteg(addr, packet.V5, packet.Connect{ClientID: "integ-latest", CleanStart: true}, 4096))
	if err := c.subscribe(&packet.Subscribe{PacketID: 1, Properties: packet.Properties{UserProperties: []packet.UserProperty{{Key: "latest-value", Value: "true"}}},
		Subscriptions: []packet.Subscription{{Filter: "integ/#"}}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	run(c, latest, func() {
		if n++; n%16 == 0 {
			time.Sleep(time.Millisecond) // behind, so that its queue is conflated
		}
	})

	sampled := newTally("sampled")
	c = must(dialInteg(addr, packet.V5, packet.Connect{ClientID: "integ-sampled", CleanStart: true}, 0))
	if err := c.subscribe(&packet.Subscribe{PacketID: 1, Properties: packet.Properties{UserProperties: []packet.UserProperty{{Key: "latest-value", Value: "15ms"}}},
		Subscriptions: []packet.Subscription{{Filter: "integ/#"}}}); err != nil {
		t.Fatal(err)
	}
	run(c, sampled, nil)

	wills := newTally("wills")
	c = must(dialInteg(addr, packet.V311, packet.Connect{ClientID: "integ-wills", CleanStart: true}, 0))
	if err := c.subscribe(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "will/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	run(c, wills, nil)

	// Churn: a client that keeps coming back under one ID, taking over the
	// session of the connection before it (left with deliveries queued) or
	// closing mid-stream.
	churn := newTally("churn")
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		var prev *icli
		for i := 0; ; i++ {
			select {
			case <-stop:
				if prev != nil {
					prev.nc.Close()
				}
				return
			default:
			}
			v := []byte{packet.V311, packet.V5}[i%2]
			c, _, err := dialInteg(addr, v, packet.Connect{ClientID: "integ-churn", CleanStart: i%3 == 0}, 4096)
			if prev != nil {
				prev.nc.Close() // taken over by now
			}
			if err != nil {
				churn.fail("connect %d: %v", i, err)
				return
			}
			// Not waiting for the SUBACK: a resumed session's messages may
			// come first.
			if err := c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "integ/#", QoS: byte(i % 3)}}}); err != nil {
				c.nc.Close()
				prev = nil
				continue
			}
			got := 0
			for got < 20+i%50 {
				p, err := c.next(time.Second)
				if err != nil {
					break
				}
				if pp, ok := p.(*packet.Publish); ok && pp.Properties.TopicAlias == nil {
					churn.add(pp.Topic, pp.Payload)
					got++
				}
			}
			if i%2 == 0 {
				c.nc.Close() // gone mid-stream, acknowledging nothing
				prev = nil
			} else {
				prev = c // the next connection takes it over
			}
		}
	}()

	// Clients that publish and vanish, leaving their wills.
	const nWills = 4
	for i := range nWills {
		v := []byte{packet.V311, packet.V5}[i%2]
		wt := fmt.Sprintf("will/%d", i)
		c := must(dialInteg(addr, v, packet.Connect{ClientID: fmt.Sprintf("integ-will-%d", i), CleanStart: true,
			Will: &packet.Will{Topic: wt, QoS: byte(i % 3), Payload: integrityPayload(wt, 100+i, i)}}, 0))
		p := newIPub(c, 100+i, 0, 4)
		for seq := range 30 {
			if err := p.publish(integTopic(100+i, seq), seq, 0, false); err != nil {
				t.Fatal(err)
			}
		}
		c.nc.Close()
	}

	integPublish(t, addr, perPub)

	waitTally(t, wills, "the wills", func() bool { wills.mu.Lock(); defer wills.mu.Unlock(); return wills.n >= nWills })
	for _, tl := range []*tally{fast311, fast5} {
		waitTally(t, tl, "every QoS 1 and 2 message", func() bool { return len(wantAcked(tl, perPub)) == 0 })
	}

	// The offline session's queue, read back.
	offline := newTally("offline session")
	c = must(dialInteg(addr, packet.V311, packet.Connect{ClientID: "integ-offline"}, 0))
	run(c, offline, nil)
	waitTally(t, offline, "its queued QoS 1 and 2 messages", func() bool { return len(wantAcked(offline, perPub)) == 0 })

	// The retained messages: the last of each topic.
	want := map[string]int{}
	for pub := range integPubs {
		for seq := range perPub {
			if integRetained(seq) {
				want[integRetTopic(pub, seq)] = seq
			}
		}
	}
	rc := must(dialInteg(addr, packet.V5, packet.Connect{ClientID: "integ-retained", CleanStart: true}, 0))
	defer rc.nc.Close()
	if err := rc.subscribe(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "integ/+/+"}}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for len(got) < len(want) {
		p, err := rc.next(testutil.Patience(t))
		if err != nil {
			t.Fatalf("retained: %d of %d topics, then %v", len(got), len(want), err)
		}
		pp, ok := p.(*packet.Publish)
		if !ok || !pp.Retain {
			continue
		}
		_, seq, err := checkIntegrity(pp.Topic, pp.Payload)
		if err != nil {
			t.Errorf("retained: %v", err)
			continue
		}
		got[pp.Topic] = seq
	}
	var wrong []string
	for tp, seq := range want {
		if got[tp] != seq {
			wrong = append(wrong, fmt.Sprintf("%s: message %d, want %d", tp, got[tp], seq))
		}
	}
	sort.Strings(wrong)
	for _, w := range wrong {
		t.Error("retained " + w)
	}

	halt()
	<-churnDone
	readers.Wait()
	reportTallies(t, fast311, fast5, latest, sampled, wills, churn, offline)
	t.Logf("received: fast 3.1.1 %d, fast 5 %d, latest-value %d, sampled %d, churn %d, offline %d",
		fast311.n, fast5.n, latest.n, sampled.n, churn.n, offline.n)
}

// TestPooledPayloadIntegrityPolicies: subscribers that fall behind meet each
// slow-consumer policy (QoS 0 deliveries dropped oldest or newest from the
// connection's queue, or the subscriber disconnected with its queue), at
// QoS 0 and 1, one reading slowly and one stuck that reads again later;
// what they get must still be whole, and a fast subscriber beside them
// gets every QoS 1 and 2 message.
func TestPooledPayloadIntegrityPolicies(t *testing.T) {
	perPub := 300
	if testing.Short() {
		perPub = 100
	}
	for _, policy := range []string{"drop_oldest", "drop_newest", "disconnect"} {
		t.Run(policy, func(t *testing.T) {
			_, addr := testutil.StartBroker(t, func(c *starling.Config) {
				c.Store = "memory"
				c.Limits.MaxInflight = 32
				c.Limits.MaxQueued = 100
				c.Limits.MaxQueuedBytes = 128 << 10
				// Short, for a test that ends soon; not so short that a
				// -race run's pauses count a reader as stuck.
				c.SlowConsumer.Timeout = 500 * time.Millisecond
				c.SlowConsumer.Policy = policy
			})
			stop := make(chan struct{})
			var once sync.Once
			halt := func() { once.Do(func() { close(stop) }) }
			var readers sync.WaitGroup
			defer readers.Wait()
			defer halt()
			var tallies []*tally
			sub := func(name string, v byte, qos byte, rcvBuf int, pace func()) *icli {
				t.Helper()
				c, _, err := dialInteg(addr, v, packet.Connect{ClientID: "integ-" + name, CleanStart: true}, rcvBuf)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.subscribe(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "integ/#", QoS: qos}}}); err != nil {
					t.Fatal(err)
				}
				tl := newTally(name)
				tallies = append(tallies, tl)
				if pace == nil && rcvBuf > 0 {
					return c // stuck: read after the publishers are done
				}
				readers.Add(1)
				go func() {
					defer readers.Done()
					defer tl.end()
					defer c.nc.Close()
					err := c.receive(tl, stop, pace)
					if err != nil && (policy != "disconnect" || tl.name == "fast") {
						tl.fail("receive: %v", err)
					}
				}()
				return c
			}
			fast := sub("fast", packet.V5, 2, 0, nil)
			_ = fast
			fastTally := tallies[0]
			for i, qos := range []byte{0, 1} {
				n := 0
				sub(fmt.Sprintf("slow-qos%d", qos), []byte{packet.V311, packet.V5}[i], qos, 16<<10, func() {
					if n++; n%8 == 0 {
						time.Sleep(time.Millisecond)
					}
				})
			}
			var stuck []*icli
			var stuckTallies []*tally
			for i, qos := range []byte{0, 1} {
				stuck = append(stuck, sub(fmt.Sprintf("stuck-qos%d", qos), []byte{packet.V5, packet.V311}[i], qos, 4096, nil))
				stuckTallies = append(stuckTallies, tallies[len(tallies)-1])
			}

			integPublish(t, addr, perPub)
			waitTally(t, fastTally, "every QoS 1 and 2 message", func() bool { return len(wantAcked(fastTally, perPub)) == 0 })
			for i, c := range stuck {
				readers.Add(1)
				go func() {
					defer readers.Done()
					defer stuckTallies[i].end()
					defer c.nc.Close()
					if err := c.receive(stuckTallies[i], stop, nil); err != nil && policy != "disconnect" {
						stuckTallies[i].fail("receive: %v", err)
					}
				}()
			}
			// What the stuck ones were kept arrives once they read; a
			// disconnected one's queue is gone with it.
			if policy != "disconnect" {
				for _, tl := range stuckTallies {
					waitTally(t, tl, "its kept messages", func() bool { tl.mu.Lock(); defer tl.mu.Unlock(); return tl.n > 0 })
				}
			}
			halt()
			readers.Wait()
			reportTallies(t, tallies...)
			for _, tl := range tallies {
				t.Logf("%s: %d received", tl.name, tl.n)
			}
		})
	}
}
