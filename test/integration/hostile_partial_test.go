package integration

import (
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// A client with keep alive 0 (no keep-alive deadline) that starts a 1 MiB
// PUBLISH and stalls is cut at limits.packet_timeout (MQTT 5: DISCONNECT
// 0x97; 3.1.1: closed), while an idle keep-alive-0 client that started no
// packet stays.
func TestHostilePartialPacketDeadline(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxPacketSize = 2 << 20
		c.Limits.PacketTimeout = timeout
	})
	idle := testutil.Dial(t, addr, packet.V5)
	idle.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "idle"})
	if ack, ok := idle.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.Success {
		t.Fatalf("idle: %+v", ack)
	}
	// A started packet: the header announces 1 MiB, 100 bytes follow.
	partial := func(version byte, id string) *testutil.Raw {
		r := testutil.Dial(t, addr, version)
		r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: version, CleanStart: true, ClientID: id})
		if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.Success {
			t.Fatalf("%s: %+v", id, ack)
		}
		r.WriteRaw(append(append([]byte{0x30}, varint(1<<20)...), make([]byte, 100)...))
		return r
	}
	start := time.Now()
	v5, v3 := partial(packet.V5, "stall-5"), partial(packet.V311, "stall-3")
	expectEnd := func(r *testutil.Raw, want *packet.ReasonCode) {
		t.Helper()
		for {
			// Without the bound nothing would ever end these: wait as
			// long as the test may run.
			p, err := r.Next(time.Minute)
			if err != nil {
				if want != nil {
					t.Fatalf("closed without DISCONNECT: %v", err)
				}
				return
			}
			if d, ok := p.(*packet.Disconnect); ok && want != nil {
				if d.ReasonCode != *want {
					t.Fatalf("DISCONNECT 0x%02x, want 0x%02x", byte(d.ReasonCode), byte(*want))
				}
				want = nil
			}
		}
	}
	quota := packet.QuotaExceeded
	expectEnd(v5, &quota)
	expectEnd(v3, nil)
	if took := time.Since(start); took < timeout {
		t.Fatalf("cut after %v, before limits.packet_timeout (%v)", took, timeout)
	}
	idle.Send(&packet.Pingreq{})
	if _, ok := idle.Read().(*packet.Pingresp); !ok {
		t.Fatal("the idle keep-alive-0 client got no PINGRESP")
	}
}
