package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
)

// rawConn is an MQTT 5 connection driven packet by packet, for what the
// real clients will not do: leave a message unacknowledged, stop reading.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string, ps ...packet.Packet) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
	r.send(ps...)
	return r
}

func (r *rawConn) send(ps ...packet.Packet) {
	r.t.Helper()
	var buf []byte
	for _, p := range ps {
		var err error
		if buf, err = packet.Append(buf, p, packet.V5); err != nil {
			r.t.Fatal(err)
		}
	}
	r.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.nc.Write(buf); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) read() packet.Packet {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	fh, err := packet.ReadFixedHeader(r.br)
	if err != nil {
		r.t.Fatal(err)
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(r.br, body); err != nil {
		r.t.Fatal(err)
	}
	p, err := packet.Decode(fh, body, packet.V5)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func connectPacket(id string, expiry uint32) *packet.Connect {
	c := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: id, KeepAlive: 60}
	if expiry > 0 {
		c.Properties.SessionExpiry = &expiry
	}
	return c
}

// dialV3 connects a paho.mqtt.golang client speaking MQTT 3.1 (level 3)
// or 3.1.1 (level 4).
func dialV3(t *testing.T, addr, id string, level uint) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(level).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s (level %d): %v", id, level, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// waitFor polls cond every 10 ms for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Every $SYS topic and the drop and protocol metrics against real traffic:
// MQTT 3.1, 3.1.1 and 5.0 clients, and a drop for each reason (a message
// expired in an offline queue, one over a client's Maximum Packet Size, a
// $share message left by an ended session, QoS 0 to a client that stopped
// reading).
func TestSysAndMetricsRealTraffic(t *testing.T) {
	lim := config.Default().Limits
	lim.MaxQueuedBytes = 64 << 10
	b, addr := startDetailedWith(t, lim, func(b *broker.Broker) {
		// The subscriber that stops reading below meets the drop policy
		// soon: its QoS 0 messages past the bound are then dropped.
		b.SetFlow(config.SlowConsumer{Timeout: 200 * time.Millisecond, Policy: "drop_newest"}, nil, 0)
	})
	reg := New(FromBroker(b)).Registry()
	start := time.Now()
	sys := NewSys(FromBroker(b), b, SysOptions{Version: "test", Start: start})
	if err := sys.Update(start.Add(time.Second)); err != nil { // the first reading, for the loads
		t.Fatal(err)
	}

	// One client of each protocol version, plus the v5 publisher.
	v31 := dialV3(t, addr, "v31", 3)
	v311 := dialV3(t, addr, "v311", 4)
	for _, c := range []mqtt.Client{v31, v311} {
		if tok := c.Subscribe("t/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("v3 subscribe: %v", tok.Error())
		}
	}
	pub := dial(t, addr, "pub")
	byProto := func() map[string]float64 { return labelled(t, reg, "mqtt_clients_connected_by_protocol") }
	if p := byProto(); p["3.1"] != 1 || p["3.1.1"] != 1 || p["5.0"] != 1 {
		t.Errorf("connected by protocol: %v, want 1 each", p)
	}
	pub.publish(t, "t/1", "hello", 1, false)

	// expired: an offline session's queued message outlives its expiry.
	sl := dialRaw(t, addr, connectPacket("sleeper", 300),
		&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "exp/#", QoS: 1}}})
	sl.read() // CONNACK
	sl.read() // SUBACK
	sl.send(&packet.Disconnect{})
	waitFor(t, "sleeper offline", func() bool { c, ok := b.Client("sleeper"); return ok && !c.Connected })
	one := uint32(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "exp/1", QoS: 1, Payload: []byte("soon stale"),
		Properties: &paho.PublishProperties{MessageExpiry: &one}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond) // the message's 1 s expiry passes (whole seconds)
	back := dialRaw(t, addr, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "sleeper", KeepAlive: 60,
		Properties: packet.Properties{SessionExpiry: &[]uint32{300}[0]}})
	if ack, ok := back.read().(*packet.Connack); !ok || !ack.SessionPresent {
		t.Fatalf("sleeper's session not resumed: %+v", ack)
	}
	back.send(&packet.Pingreq{})
	if p, ok := back.read().(*packet.Pingresp); !ok {
		t.Fatalf("sleeper got %T, want only PINGRESP (the expired message dropped)", p)
	}
	back.send(&packet.Disconnect{}) // offline again: clients/disconnected
	waitFor(t, "sleeper offline again", func() bool { c, ok := b.Client("sleeper"); return ok && !c.Connected })

	// too_large: a client that accepts packets of at most 64 bytes.
	maxSize := uint32(64)
	tc := connectPacket("tiny", 0)
	tc.Properties.MaximumPacketSize = &maxSize
	tiny := dialRaw(t, addr, tc, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "big/#", QoS: 1}}})
	tiny.read()
	tiny.read()
	pub.publish(t, "big/1", string(make([]byte, 200)), 1, false)

	// no_share_member: the only member of a $share group leaves, its
	// session ending with a message unacknowledged.
	sh := dialRaw(t, addr, connectPacket("member", 0),
		&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "$share/g/jobs/#", QoS: 1}}})
	sh.read()
	sh.read()
	pub.publish(t, "jobs/1", "work", 1, false)
	if p, ok := sh.read().(*packet.Publish); !ok || p.Topic != "jobs/1" {
		t.Fatalf("member got %+v, want the job", p)
	}
	sh.nc.Close()

	// slow_reader: a subscriber that stops reading while 16 MiB of QoS 0
	// messages (more than the socket buffers hold) come its way; the
	// publisher is held back until the slow-consumer policy drops for it.
	slow := dialRaw(t, addr, connectPacket("slow", 0), &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "flood/#"}}})
	slow.read()
	slow.read()
	flood := dialRaw(t, addr, connectPacket("flooder", 0))
	flood.read()
	big := make([]byte, 16<<10)
	for i := 0; i < 1000; i += 50 {
		var ps []packet.Packet
		for j := range 50 {
			ps = append(ps, &packet.Publish{Topic: fmt.Sprintf("flood/%d", i+j), Payload: big})
		}
		flood.send(ps...)
	}
	flood.send(&packet.Pingreq{}) // answered once every publish was routed
	if _, ok := flood.read().(*packet.Pingresp); !ok {
		t.Fatal("flooder: no PINGRESP")
	}

	reasons := func() map[string]float64 { return labelled(t, reg, "mqtt_messages_dropped_by_reason_total") }
	waitFor(t, "a drop of each reason", func() bool {
		d := reasons()
		return d["expired"] == 1 && d["too_large"] == 1 && d["no_share_member"] == 1 && d["slow_reader"] > 0
	})
	d := reasons()
	if d["queue_full"] != 0 {
		t.Errorf("dropped by reason: %v, want no queue_full", d)
	}
	if p := byProto(); p["3.1"] != 1 || p["3.1.1"] != 1 || p["5.0"] != 4 { // pub, tiny, slow, flooder
		t.Errorf("connected by protocol: %v, want 3.1: 1, 3.1.1: 1, 5.0: 4", p)
	}

	// The $SYS tree, read by a real client after a second reading 10 s
	// (of the broker's clock) after the first.
	v := values(t, reg)
	if err := sys.Update(start.Add(11 * time.Second)); err != nil {
		t.Fatal(err)
	}
	reader := dial(t, addr, "sys-reader")
	reader.subscribe(t, "$SYS/broker/#")
	got := map[string]string{}
	want := []string{"uptime", "version", "clients/connected", "clients/disconnected", "clients/total",
		"messages/received", "messages/sent", "publish/messages/received", "publish/messages/sent", "publish/messages/dropped",
		"bytes/received", "bytes/sent", "subscriptions/count", "retained messages/count"}
	var loads []string
	for _, n := range []string{"messages/received", "messages/sent", "publish/received", "publish/sent", "connections", "bytes/received", "bytes/sent"} {
		for _, w := range []string{"1min", "5min", "15min"} {
			loads = append(loads, "load/"+n+"/"+w)
		}
	}
	want = append(want, loads...)
	deadline := time.After(5 * time.Second)
	for missing := len(want); missing > 0; {
		select {
		case p := <-reader.Recv:
			got[p.Topic[len("$SYS/broker/"):]] = string(p.Payload)
			missing = 0
			for _, k := range want {
				if _, ok := got[k]; !ok {
					missing++
				}
			}
		case <-deadline:
			t.Fatalf("$SYS topics missing; got %v", got)
		}
	}
	num := func(k string) float64 {
		t.Helper()
		f, err := strconv.ParseFloat(got[k], 64)
		if err != nil {
			t.Errorf("$SYS/broker/%s = %q, not a number", k, got[k])
		}
		return f
	}
	// Connected before the reader: v31, v311, pub, tiny, slow, flooder;
	// sleeper's session kept offline.
	for k, w := range map[string]string{
		"version": "starling test", "uptime": "11 seconds",
		"clients/connected": "6", "clients/disconnected": "1", "clients/total": "7",
	} {
		if got[k] != w {
			t.Errorf("$SYS/broker/%s = %q, want %q", k, got[k], w)
		}
	}
	for k, m := range map[string]string{
		"messages/received":         "mqtt_messages_received_total",
		"publish/messages/received": "mqtt_messages_received_total",
		"publish/messages/dropped":  "mqtt_messages_dropped_total",
		"subscriptions/count":       "mqtt_subscriptions_current",
		"retained messages/count":   "mqtt_retained_messages", // the $SYS tree's own
		"clients/connected":         "mqtt_clients_connected",
	} {
		if num(k) != v[m] {
			t.Errorf("$SYS/broker/%s = %s, %s = %v", k, got[k], m, v[m])
		}
	}
	// 1000 flood messages and pub's 4.
	if n := num("publish/messages/received"); n != 1004 {
		t.Errorf("publish/messages/received = %v, want 1004", n)
	}
	if n := num("publish/messages/dropped"); n != d["expired"]+d["too_large"]+d["no_share_member"]+d["slow_reader"] {
		t.Errorf("publish/messages/dropped = %v, the reasons add up to %v", n, d)
	}
	if n := num("messages/sent"); n < 2 || n != num("publish/messages/sent") {
		t.Errorf("messages/sent = %v, publish/messages/sent = %v", n, got["publish/messages/sent"])
	}
	if n := num("bytes/received"); n < 1000*16<<10 {
		t.Errorf("bytes/received = %v, want over the 16 MiB flooded", n)
	}
	if n := num("bytes/sent"); n <= 0 {
		t.Errorf("bytes/sent = %v", n)
	}
	for _, k := range loads {
		if n := num(k); n < 0 {
			t.Errorf("$SYS/broker/%s = %v", k, n)
		}
	}
	// 1004 messages in the 10 s since the first reading: 6024 a minute,
	// averaged as Mosquitto does from a first reading of 0.
	for w, secs := range map[string]float64{"1min": 60, "5min": 300, "15min": 900} {
		if n, want := num("load/messages/received/"+w), 6024*(1-math.Exp(-10/secs)); math.Abs(n-want) > 0.01 {
			t.Errorf("load/messages/received/%s = %v, want %.2f", w, n, want)
		}
	}
	if n := num("load/connections/1min"); n <= 0 {
		t.Errorf("load/connections/1min = %v", n)
	}
}
