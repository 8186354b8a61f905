package crash

import (
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/packet"
)

// A will the client discarded with a normal DISCONNECT stays discarded
// when the broker is killed right after: the end of the connection is
// durable before the broker lets the client go. Before, the record of the
// DISCONNECT was not synced, and the restart published the will of a
// session it took for "connected at shutdown". The will has no delay, so
// a restart that wrongly kept it publishes it while loading the store,
// into the watcher's persistent session, ahead of the marker sent after.
func TestDiscardedWillStaysDiscardedAfterKill(t *testing.T) {
	b := &broker{t: t, addr: freeport.Addr(t), data: t.TempDir()}
	defer b.kill()
	b.start()
	watch, _, err := dialMQTT(b.addr, "will-watcher")
	if err != nil {
		t.Fatal(err)
	}
	watch.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "wills/#", QoS: 1}}})
	if p, err := watch.next(5 * time.Second); err != nil {
		t.Fatalf("watcher SUBACK: %v", err)
	} else if _, ok := p.(*packet.Suback); !ok {
		t.Fatalf("watcher: got %T, want SUBACK", p)
	}
	watch.close()

	for _, v := range []byte{packet.V311, packet.V5} {
		nc, err := net.DialTimeout("tcp", b.addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := &mqttConn{nc: nc}
		c.br = newReader(nc)
		cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: v, ClientID: "will-client", KeepAlive: 60,
			Will: &packet.Will{Topic: "wills/w", Payload: []byte("should not be sent"), QoS: 1}}
		if v == packet.V5 {
			e := uint32(3600)
			cp.Properties.SessionExpiry = &e
		}
		if err := c.sendV(v, cp); err != nil {
			t.Fatal(err)
		}
		if _, err := c.nextV(v, 5*time.Second); err != nil {
			t.Fatalf("CONNACK: %v", err)
		}
		c.sendV(v, &packet.Disconnect{})
		// The broker closes once it has handled the DISCONNECT.
		if _, err := c.nextV(v, 5*time.Second); err == nil {
			t.Fatal("a packet after DISCONNECT")
		}
		c.close()
		b.kill()
		b.start()
	}

	watch, ack, err := dialMQTT(b.addr, "will-watcher")
	if err != nil {
		t.Fatal(err)
	}
	defer watch.close()
	if !ack.SessionPresent {
		t.Fatal("watcher's session lost")
	}
	watch.send(&packet.Publish{Topic: "wills/marker", QoS: 1, PacketID: 1, Payload: []byte("marker")})
	for {
		p, err := watch.next(10 * time.Second)
		if err != nil {
			t.Fatalf("watcher: %v before the marker", err)
		}
		pub, ok := p.(*packet.Publish)
		if !ok {
			continue // the marker's PUBACK
		}
		if pub.QoS > 0 {
			watch.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
		}
		if pub.Topic == "wills/w" {
			t.Fatalf("the discarded will was published after the restart: %q", pub.Payload)
		}
		if pub.Topic == "wills/marker" {
			return
		}
	}
}
