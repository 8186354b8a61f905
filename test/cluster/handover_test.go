package cluster_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/testutil"
)

// A persistent session whose queue is far larger than one backplane
// message (200 x 20 KiB, several MiB once encoded) moves to another node
// intact: every queued message arrives, in order, byte for byte.
func TestClusterLargeSessionMoves(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	persistent := func() *paho.Connect {
		e := uint32(300)
		return &paho.Connect{CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: &e}}
	}
	c1, _ := testutil.DialPaho(t, nodes[0].addr, "big", persistent())
	c1.Sub(t, paho.SubscribeOptions{Topic: "big/#", QoS: 1})
	c1.Disconnect(&paho.Disconnect{})

	// Published on the session's node: acknowledged means queued there.
	pub, _ := testutil.DialPaho(t, nodes[0].addr, "pub", nil)
	const n, size = 200, 20 << 10
	payload := func(i int) []byte {
		return bytes.Repeat([]byte{byte('a' + i%26)}, size-8)
	}
	for i := range n {
		pub.Pub(t, &paho.Publish{Topic: "big/m", QoS: 1, Payload: append([]byte(fmt.Sprintf("%08d", i)), payload(i)...)})
	}

	c2, ack := testutil.DialPaho(t, nodes[1].addr, "big", persistent())
	if !ack.SessionPresent {
		t.Fatalf("reconnect on another node: session present = false")
	}
	for i := range n {
		m := c2.Expect(t, 20*time.Second)
		if want := append([]byte(fmt.Sprintf("%08d", i)), payload(i)...); !bytes.Equal(m.Payload, want) {
			t.Fatalf("queued message %d: got %.8q (%d bytes), want %.8q (%d bytes)", i, m.Payload, len(m.Payload), want, len(want))
		}
	}
	c2.Quiet(t, 300*time.Millisecond)
	c2.Disconnect(&paho.Disconnect{})

	// The old node let its copy go once the new one had it: moving back
	// finds the session, and none of the messages again.
	c3, ack := testutil.DialPaho(t, nodes[0].addr, "big", persistent())
	if !ack.SessionPresent {
		t.Fatalf("moving back to n1: session present = false")
	}
	c3.Quiet(t, time.Second)
}
