package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// droppedTotal reads mqtt_messages_dropped_total from the broker's
// /metrics.
func droppedTotal(t *testing.T, srv *starling.Server) int {
	t.Helper()
	resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "mqtt_messages_dropped_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("mqtt_messages_dropped_total %q: %v", v, err)
			}
			return int(n)
		}
	}
	t.Fatalf("no mqtt_messages_dropped_total in /metrics")
	return 0
}

// limits.max_queued_bytes: an offline session keeps QoS 1 messages up to
// that many topic and payload bytes, drops the newest above it and counts
// them; a connected subscriber that does not read holds its publisher back
// until the slow-consumer timeout, then (policy drop_newest) loses the QoS 0
// messages above it, every one of them counted.
func TestQueuedBytesLimit(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxQueuedBytes = limit
		c.SlowConsumer.Timeout = 200 * time.Millisecond
		c.SlowConsumer.Policy = "drop_newest"
	})
	pub, _ := dialV5(t, addr, "qb-pub", nil)

	// QoS 1 to an offline session: 10 KiB messages, 6 fit in 64 KiB.
	sub, _ := v5Raw(t, addr, "qb-sub", true, 300)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "qb1/#", QoS: 1})
	sub.Send(&packet.Disconnect{})
	v5WaitEOF(t, sub)
	payload := make([]byte, 10<<10)
	for i := range 20 {
		pub.pub(t, &paho.Publish{Topic: fmt.Sprintf("qb1/%02d", i), QoS: 1, Payload: payload})
	}
	if d := droppedTotal(t, srv); d != 14 {
		t.Fatalf("dropped %d for the offline session, want 14", d)
	}
	sub, ack := v5Raw(t, addr, "qb-sub", false, 300)
	if !ack.SessionPresent {
		t.Fatalf("session not resumed")
	}
	for i := range 6 {
		p := v5Read[*packet.Publish](t, sub)
		if want := fmt.Sprintf("qb1/%02d", i); p.Topic != want {
			t.Fatalf("queued message %d on %q, want %q (the oldest are kept)", i, p.Topic, want)
		}
		sub.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	v5Silent(t, sub, v5Quiet)

	// QoS 0 to a connected subscriber that does not read: 1,000 messages
	// of 16 KiB (16 MiB, more than the socket buffers hold; fewer than the
	// 1,024 QoS 0 messages a connection may hold by count).
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	cp, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "qb-slow"}, packet.V5)
	sb, _ := packet.Append(nil, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "qb0/#"}}}, packet.V5)
	nc.Write(append(cp, sb...))
	slow := &rawReader{nc: nc}
	if _, ok := slow.next().(*packet.Connack); !ok {
		t.Fatal("slow subscriber: no CONNACK")
	}
	if _, ok := slow.next().(*packet.Suback); !ok {
		t.Fatal("slow subscriber: no SUBACK")
	}
	before := droppedTotal(t, srv)
	const n = 1000
	raw, _ := v5Raw(t, addr, "qb-pub0", true, 0)
	big := make([]byte, 16<<10)
	for i := 0; i < n; i += 50 {
		var ps []packet.Packet
		for j := range 50 {
			ps = append(ps, &packet.Publish{Topic: fmt.Sprintf("qb0/%d", i+j), Payload: big})
		}
		raw.Send(ps...)
	}
	raw.Send(&packet.Pingreq{}) // answered once every publish was routed
	v5Read[*packet.Pingresp](t, raw)
	dropped := droppedTotal(t, srv) - before
	got := 0
	for {
		nc.SetReadDeadline(time.Now().Add(time.Second))
		p := slow.next()
		if p == nil {
			break
		}
		if _, ok := p.(*packet.Publish); ok {
			got++
		}
	}
	t.Logf("slow subscriber: %d received, %d dropped", got, dropped)
	if dropped == 0 || got+dropped != n {
		t.Fatalf("slow subscriber received %d and %d were counted dropped; want some dropped and %d in all", got, dropped, n)
	}
	// What it reads next arrives.
	pub.pub(t, &paho.Publish{Topic: "qb0/after", Payload: []byte("after")})
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if p, ok := slow.next().(*packet.Publish); !ok || p.Topic != "qb0/after" {
		t.Fatalf("after draining: got %+v", p)
	}
}
