package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// v5Collect receives from the paho clients until n messages arrived in
// total (or 5 s passed) and returns the payloads per client.
func v5Collect(t *testing.T, n int, cs ...*v5Client) [][]string {
	t.Helper()
	out := make([][]string, len(cs))
	total := 0
	deadline := time.After(5 * time.Second)
	for total < n {
		got := false
		for i, c := range cs {
			select {
			case m := <-c.recv:
				out[i] = append(out[i], string(m.Payload))
				total++
				got = true
			default:
			}
		}
		if !got {
			select {
			case <-deadline:
				t.Fatalf("received %d of %d messages: %v", total, n, out)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return out
}

// A shared subscription balances messages among its members: each gets
// some, none twice, all together everything; a plain subscriber gets all.
func TestV5SharedSubscriptionBalanced(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	m1, _ := dialV5(t, addr, "sh-1", nil)
	m2, _ := dialV5(t, addr, "sh-2", nil)
	for _, m := range []*v5Client{m1, m2} {
		if sa := m.sub(t, paho.SubscribeOptions{Topic: "$share/g/sh/t", QoS: 1}); sa.Reasons[0] != 1 {
			t.Fatalf("shared SUBACK %d", sa.Reasons[0])
		}
	}
	plain, _ := dialV5(t, addr, "sh-plain", nil)
	plain.sub(t, paho.SubscribeOptions{Topic: "sh/t", QoS: 1})
	pub, _ := dialV5(t, addr, "sh-pub", nil)
	const n = 20
	for i := range n {
		pub.pub(t, &paho.Publish{Topic: "sh/t", QoS: 1, Payload: fmt.Appendf(nil, "%d", i)})
	}
	got := v5Collect(t, n, m1, m2)
	m1.expectNone(t, v5Quiet)
	m2.expectNone(t, 50*time.Millisecond)
	if len(got[0]) == 0 || len(got[1]) == 0 {
		t.Fatalf("unbalanced: member 1 got %d, member 2 got %d", len(got[0]), len(got[1]))
	}
	seen := map[string]bool{}
	for _, p := range append(got[0], got[1]...) {
		if seen[p] {
			t.Fatalf("message %s delivered to the group twice", p)
		}
		seen[p] = true
	}
	if len(seen) != n {
		t.Fatalf("group got %d distinct messages, want %d", len(seen), n)
	}
	if all := v5Collect(t, n, plain); len(all[0]) != n {
		t.Fatalf("plain subscriber got %d", len(all[0]))
	}
}

// No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
func TestV5SharedSubscriptionNoLocal(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r, _ := v5Raw(t, addr, "shnl", true, 0)
	r.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "$share/g/t", QoS: 1, NoLocal: true}}})
	r.ExpectClosed(packet.ProtocolError)
}

// A member that leaves with unacknowledged QoS 1 messages: they go to the
// other member of the group.
func TestV5SharedSubscriptionRetryOnDisconnect(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	a, _ := v5Raw(t, addr, "shr-a", true, 0)
	v5RawSub(t, a, 1, 0, packet.Subscription{Filter: "$share/rg/shr/t", QoS: 1})
	b, _ := dialV5(t, addr, "shr-b", nil)
	b.sub(t, paho.SubscribeOptions{Topic: "$share/rg/shr/t", QoS: 1})
	pub, _ := dialV5(t, addr, "shr-pub", nil)
	const n = 6
	for i := range n {
		pub.pub(t, &paho.Publish{Topic: "shr/t", QoS: 1, Payload: fmt.Appendf(nil, "%d", i)})
	}
	var atA []string
	for {
		p, err := a.Next(v5Quiet)
		if err != nil {
			break
		}
		if pp, ok := p.(*packet.Publish); ok {
			atA = append(atA, string(pp.Payload)) // never acknowledged
		}
	}
	if len(atA) == 0 {
		t.Fatalf("member A got no message; cannot test the hand-over")
	}
	a.Close()
	got := v5Collect(t, n, b)[0]
	seen := map[string]bool{}
	for _, p := range got {
		if seen[p] {
			t.Fatalf("member B got %s twice", p)
		}
		seen[p] = true
	}
	for _, p := range atA {
		if !seen[p] {
			t.Fatalf("message %s unacknowledged by A never reached B (B got %v)", p, got)
		}
	}
	b.expectNone(t, v5Quiet)
}
