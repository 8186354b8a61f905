package integration

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/testutil"
)

func TestV5PublishSubscribeAllQoS(t *testing.T) {
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "sub", nil)
	pub, _ := dialV5(t, addr, "pub", nil)
	sa := sub.sub(t, paho.SubscribeOptions{Topic: "a/+/c", QoS: 2})
	if sa.Reasons[0] != 2 {
		t.Fatalf("granted %d", sa.Reasons[0])
	}
	for q := byte(0); q <= 2; q++ {
		pub.pub(t, &paho.Publish{Topic: "a/b/c", QoS: q, Payload: []byte{'0' + q}})
		m := sub.expect(t)
		if m.Topic != "a/b/c" || string(m.Payload) != string([]byte{'0' + q}) || m.QoS != q {
			t.Fatalf("qos %d: got topic %q payload %q qos %d", q, m.Topic, m.Payload, m.QoS)
		}
	}
	sub.expectNone(t, 100*time.Millisecond)
}
