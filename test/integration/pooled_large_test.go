package integration

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// largePayload is message seq of publisher pub: sizes from 1 KiB to past
// 128 KiB, across the pooled body classes (64 KiB plus a topic is just past
// a power of two) and both sides of the size from which a TCP writer sends
// a payload from the message's memory instead of copying it.
func largePayload(pub, seq int) []byte {
	sizes := []int{1 << 10, 4<<10 - 1, 4 << 10, 5000, 16 << 10, 64<<10 - 30, 64 << 10, 64<<10 + 1, 100 << 10, 128 << 10, 130 << 10, 300}
	n := sizes[(seq+pub)%len(sizes)]
	b := make([]byte, n)
	b[0] = byte(pub)
	binary.BigEndian.PutUint32(b[1:], uint32(seq))
	for i := 5; i < n; i++ {
		b[i] = byte(pub*131 + seq*7 + i + i>>8)
	}
	return b
}

// TestPooledQoS0LargePayloadsIntact sends QoS 0 messages of 300 B to
// 130 KiB in batches from 3.1.1 and 5 publishers. Topics under big/ reach
// a 3.1.1 and a 5 subscriber (the message's shared encodings, written as
// a copied head and the payload in place); topics under solo/ reach one
// subscriber alone (encoded straight into its writer, head only, payload
// in place). Every message must arrive once, in order per publisher, with
// its own topic and bytes.
func TestPooledQoS0LargePayloadsIntact(t *testing.T) {
	_, addr := testutil.StartBroker(t, nil)
	const pubs, perPub, batch = 2, 96, 12
	type sub struct {
		c      *testutil.Raw
		filter string
		want   int // messages it must get
	}
	subs := []sub{{filter: "big/#"}, {filter: "big/#"}, {filter: "solo/#"}}
	versions := []byte{packet.V311, packet.V5, packet.V311}
	topicOf := func(pub, seq int) string {
		if pub == 1 {
			return fmt.Sprintf("solo/%d", seq%3)
		}
		return fmt.Sprintf("big/%d/%d", pub, seq%3)
	}
	for i := range subs {
		subs[i].c = testutil.Dial(t, addr, versions[i])
		subs[i].c.Connect(fmt.Sprintf("large-sub-%d", i), true)
		subs[i].c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: subs[i].filter}}})
		if _, ok := subs[i].c.Read().(*packet.Suback); !ok {
			t.Fatal("expected SUBACK")
		}
		subs[i].want = perPub // publisher 0 to big/, publisher 1 to solo/
	}
	errs := make(chan error, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Go(func() {
			next := make([]int, pubs)
			for got := 0; got < s.want; got++ {
				p, err := s.c.Next(testutil.Patience(t))
				if err != nil {
					errs <- fmt.Errorf("subscriber %d after %d messages: %v", i, got, err)
					return
				}
				pp, ok := p.(*packet.Publish)
				if !ok || len(pp.Payload) < 5 {
					errs <- fmt.Errorf("subscriber %d: unexpected %T", i, p)
					return
				}
				pub, seq := int(pp.Payload[0]), int(binary.BigEndian.Uint32(pp.Payload[1:]))
				if pub >= pubs || seq != next[pub] {
					errs <- fmt.Errorf("subscriber %d: publisher %d message %d, want %d", i, pub, seq, next[min(pub, pubs-1)])
					return
				}
				next[pub]++
				if pp.Topic != topicOf(pub, seq) || string(pp.Payload) != string(largePayload(pub, seq)) {
					errs <- fmt.Errorf("subscriber %d: publisher %d message %d (%d bytes) arrived altered (topic %q)", i, pub, seq, len(pp.Payload), pp.Topic)
					return
				}
			}
		})
	}
	pubConns := make([]*testutil.Raw, pubs)
	for p := range pubConns {
		pubConns[p] = testutil.Dial(t, addr, versions[p%2])
		pubConns[p].Connect(fmt.Sprintf("large-pub-%d", p), true)
	}
	for seq := 0; seq < perPub; seq += batch {
		for p, c := range pubConns {
			var buf []byte
			for k := seq; k < seq+batch; k++ {
				buf, _ = packet.Append(buf, &packet.Publish{Topic: topicOf(p, k), Payload: largePayload(p, k)}, c.Version)
			}
			c.WriteRaw(buf)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
