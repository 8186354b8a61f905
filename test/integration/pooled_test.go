package integration

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// pooledPayload is what publisher pub sends as its message seq: its size
// varies across the pools' size classes, and every byte depends on both.
func pooledPayload(pub, seq int) []byte {
	n := 5 + (seq*37)%3000
	b := make([]byte, n)
	b[0] = byte(pub)
	binary.BigEndian.PutUint32(b[1:], uint32(seq))
	for i := 5; i < n; i++ {
		b[i] = byte(pub*31 + seq + i)
	}
	return b
}

// TestPooledQoS0PayloadsIntact sends QoS 0 messages, whose messages,
// bodies and encodings are pooled and reused, from MQTT 3.1.1 and 5
// publishers in batches (several packets per read) over changing topics,
// to 3.1.1 and 5 subscribers (two encodings per message): every message
// must arrive once, in order per publisher, with its own topic and bytes.
func TestPooledQoS0PayloadsIntact(t *testing.T) {
	_, addr := testutil.StartBroker(t, nil)
	const pubs, perPub, batch = 3, 600, 50
	versions := []byte{packet.V311, packet.V5}
	subs := make([]*testutil.Raw, len(versions))
	for i, v := range versions {
		subs[i] = testutil.Dial(t, addr, v)
		subs[i].Connect(fmt.Sprintf("pool-sub-%d", i), true)
		subs[i].Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "pool/#"}}})
		if _, ok := subs[i].Read().(*packet.Suback); !ok {
			t.Fatal("expected SUBACK")
		}
	}
	topicOf := func(pub, seq int) string { return fmt.Sprintf("pool/%d/%d", pub, seq/7%3) }
	errs := make(chan error, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := make([]int, pubs)
			for got := 0; got < pubs*perPub; got++ {
				p, err := s.Next(testutil.Patience(t))
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
				if pp.Topic != topicOf(pub, seq) || string(pp.Payload) != string(pooledPayload(pub, seq)) {
					errs <- fmt.Errorf("subscriber %d: publisher %d message %d arrived altered (topic %q)", i, pub, seq, pp.Topic)
					return
				}
			}
		}()
	}
	pubConns := make([]*testutil.Raw, pubs)
	for p := range pubConns {
		pubConns[p] = testutil.Dial(t, addr, versions[p%len(versions)])
		pubConns[p].Connect(fmt.Sprintf("pool-pub-%d", p), true)
	}
	for seq := 0; seq < perPub; seq += batch {
		for p, c := range pubConns {
			var buf []byte
			for k := seq; k < seq+batch; k++ {
				buf, _ = packet.Append(buf, &packet.Publish{Topic: topicOf(p, k), Payload: pooledPayload(p, k)}, c.Version)
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
