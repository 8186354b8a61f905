package integration

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/poll"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// waitParked waits until at least n sockets are parked in the idle poller.
func waitParked(t *testing.T, n int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); poll.Parked() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections parked, want at least %d", poll.Parked(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Idle connections over TCP and WebSocket wait in the poller, without a
// goroutine, and are served as before: deliveries reach them, their
// packets wake them, keep alive still cuts a silent one off, and a broker
// shutdown ends them all with DISCONNECT 0x8B.
func TestIdlePollParksAndServes(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("idle poll is Linux only")
	}
	srv, addr := testutil.StartBroker(t, nil) // idle_poll defaults on
	base := poll.Parked()
	var subs []*v5Conn
	for i := range 10 {
		r, _ := v5Raw(t, addr, fmt.Sprintf("idle-tcp-%d", i), true, 0)
		subs = append(subs, r)
		w := testutil.NewRaw(t, dialWS(t, srv, nil), packet.V5)
		w.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: fmt.Sprintf("idle-ws-%d", i), CleanStart: true})
		v5Read[*packet.Connack](t, w)
		subs = append(subs, w)
	}
	for _, s := range subs {
		v5RawSub(t, s, 1, 0, packet.Subscription{Filter: "idle/t", QoS: 1})
	}
	waitParked(t, base+int64(len(subs)))

	pub, _ := v5Raw(t, addr, "idle-pub", true, 0)
	pub.Send(&packet.Publish{Topic: "idle/t", QoS: 1, PacketID: 7, Payload: []byte("wake")})
	v5ReadAck(t, pub, packet.PUBACK)
	for _, s := range subs {
		p := v5ReadPub(t, s, "idle/t", "wake")
		s.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	waitParked(t, base+int64(len(subs))+1)
	for _, s := range subs[:4] {
		s.Send(&packet.Pingreq{})
		v5Read[*packet.Pingresp](t, s)
	}

	// Keep alive 1 s: parked with a 1.5 s deadline, then cut off.
	start := time.Now()
	ka, _ := v5RawConnect(t, addr, &packet.Connect{ClientID: "idle-ka", CleanStart: true, KeepAlive: 1})
	ka.ExpectClosed(packet.KeepAliveTimeout)
	if el := time.Since(start); el < time.Second {
		t.Fatalf("cut off after %v, before the keep alive", el)
	}

	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	for _, s := range append(subs, pub) {
		s.ExpectClosed(packet.ServerShuttingDown)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("srv.Close did not return")
	}
	if n := poll.Parked(); n > base {
		t.Fatalf("%d connections still parked after shutdown, %d before the test", n, base)
	}
}
