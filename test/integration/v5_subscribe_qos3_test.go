package integration

import (
	"testing"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// A v5 SUBSCRIBE with Maximum QoS 3 is a Protocol Error (MQTT 5.0
// section 3.8.3.1): DISCONNECT 0x82, not 0x81. In 3.1.1 it is malformed
// [MQTT-3-8.3-4]: the connection is closed.
func TestV5SubscribeMaximumQoS3(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Store = "memory" })
	v5 := testutil.Dial(t, addr, packet.V5)
	v5.Connect("qos3-5", true)
	// SUBSCRIBE id 1, no properties, filter "a", options 0x03.
	v5.WriteRaw(hostilePkt(0x82, []byte{0, 1, 0}, []byte{0, 1, 'a', 0x03}))
	v5.ExpectClosed(packet.ProtocolError)

	v3 := testutil.Dial(t, addr, packet.V311)
	v3.Connect("qos3-3", true)
	v3.WriteRaw(hostilePkt(0x82, []byte{0, 1}, []byte{0, 1, 'a', 0x03}))
	v3.ExpectClosed(0)
}
