package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// A node receives from the backplane only what its clients subscribe to:
// messages on topics nobody there subscribes to never reach it.
func TestNodeReceivesOnlyItsInterest(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	u1, u2 := nodes[0], nodes[1]
	local, _, _ := connect(t, u1.addr, "local")
	sub(t, local, "quiet/#") // a subscriber, so that publishing matches something
	pub, _, _ := connect(t, u1.addr, "pub")
	publish := func(topic string, count int) {
		t.Helper()
		for i := range count {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: fmt.Appendf(nil, "%d", i)})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	before := u2.n.sc.Stats().InMsgs
	publish("quiet/x", 50)
	time.Sleep(300 * time.Millisecond)
	if got := u2.n.sc.Stats().InMsgs - before; got != 0 {
		t.Fatalf("u2, with no subscriber, received %d messages", got)
	}

	// Once a client on u2 subscribes, the messages come.
	remote, _, _ := connect(t, u2.addr, "remote")
	sub(t, remote, "quiet/#")
	for deadline := time.Now().Add(20 * time.Second); u2.n.sc.Stats().InMsgs == before; {
		if time.Now().After(deadline) {
			t.Fatal("u2 received nothing after its client subscribed")
		}
		publish("quiet/x", 1)
		time.Sleep(50 * time.Millisecond)
	}
}
