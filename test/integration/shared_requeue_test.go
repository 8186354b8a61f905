package integration

import (
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// The only member of a share group disconnects with a QoS 1 message
// unacknowledged: nobody else can take it, so its persistent session keeps it
// and gets it again (DUP or not) on reconnect. Nothing acknowledged is lost.
func TestSharedSoleMemberKeepsUnackedMessage(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	expiry := uint32(3600)
	connect := func() *testutil.Raw {
		r := testutil.Dial(t, addr, packet.V5)
		r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "sole", KeepAlive: 30,
			Properties: packet.Properties{SessionExpiry: &expiry}})
		if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != 0 {
			t.Fatalf("connect: %+v", ack)
		}
		return r
	}
	sub := connect()
	sub.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "$share/g/jobs", QoS: 1}}})
	if _, ok := sub.Read().(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	pub := testutil.Dial(t, addr, packet.V5)
	pub.Connect("sole-pub", true)
	pub.Send(&packet.Publish{Topic: "jobs", QoS: 1, PacketID: 9, Payload: []byte("job-1")})
	if ack, ok := pub.Read().(*packet.Ack); !ok || ack.ReasonCode != packet.Success {
		t.Fatalf("publisher not acknowledged: %+v", ack)
	}
	if p, ok := sub.Read().(*packet.Publish); !ok || string(p.Payload) != "job-1" {
		t.Fatalf("member did not get the job: %+v", p)
	}
	// Leave without PUBACK.
	sub.Send(&packet.Disconnect{ReasonCode: packet.DisconnectWithWill})
	for {
		if _, err := sub.Next(5 * time.Second); err != nil {
			break // closed by the broker
		}
	}

	again := connect()
	p, ok := again.Read().(*packet.Publish)
	if !ok || string(p.Payload) != "job-1" {
		t.Fatalf("after reconnect got %+v, want job-1 again", p)
	}
}
