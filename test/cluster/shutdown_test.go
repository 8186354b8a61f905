package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// A node stopped gracefully while a publisher on another node publishes
// QoS 1 to a persistent session it owns, whose client reconnects to a third
// node: the session is found there, and every acknowledged message reaches
// the client, on one connection or the other.
func TestClusterGracefulStopLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	e := uint32(300)
	cp := func() *paho.Connect {
		return &paho.Connect{CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: &e}}
	}
	sub, _ := testutil.DialPaho(t, nodes[0].addr, "gs-sub", cp())
	sub.Sub(t, paho.SubscribeOptions{Topic: "gs/#", QoS: 1})
	pub, _ := testutil.DialPaho(t, nodes[1].addr, "gs-pub", nil)
	warm(t, pub, "gs/probe", sub)

	var mu sync.Mutex
	var acked []string
	var pubErr error
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := fmt.Sprintf("m%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
			_, err := pub.Publish(ctx, &paho.Publish{Topic: "gs/a", QoS: 1, Payload: []byte(p)})
			cancel()
			mu.Lock()
			if err != nil {
				pubErr = err
				mu.Unlock()
				return
			}
			acked = append(acked, p)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// awaitAcked waits for count more acknowledgements (or a failed
	// publish, reported at the end).
	awaitAcked := func(count int) {
		mu.Lock()
		want := len(acked) + count
		mu.Unlock()
		for {
			mu.Lock()
			n, err := len(acked), pubErr
			mu.Unlock()
			if n >= want || err != nil {
				return
			}
			select {
			case <-pubDone:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	awaitAcked(20)

	closed := make(chan struct{})
	go func() { nodes[0].srv.Close(); close(closed) }()
	select {
	case <-sub.Done():
	case <-time.After(testutil.Patience(t)):
		t.Fatal("the stopping node did not disconnect its client")
	}
	// Whatever reached the first connection counts.
	got := make(map[string]bool)
	for len(sub.Recv) > 0 {
		got[string((<-sub.Recv).Payload)] = true
	}
	var sub2 *testutil.Paho
	brokertest.Poll(t, 100*time.Millisecond, testutil.Patience(t), func() error {
		c, ack, err := testutil.TryDialPaho(t, nodes[2].addr, "gs-sub", cp())
		if err != nil {
			return fmt.Errorf("reconnect to n3: %w", err)
		}
		if !ack.SessionPresent {
			t.Fatal("reconnected to another node: session present = false")
		}
		sub2 = c
		return nil
	})
	<-closed
	// Some more after the node has gone.
	awaitAcked(10)
	close(stop)
	<-pubDone
	if pubErr != nil {
		t.Fatalf("publish: %v", pubErr)
	}
	for _, p := range acked {
		for !got[p] {
			select {
			case m := <-sub2.Recv:
				got[string(m.Payload)] = true
			case <-time.After(testutil.Patience(t)):
				missing := 0
				for _, q := range acked {
					if !got[q] {
						missing++
					}
				}
				t.Fatalf("%d of %d acknowledged messages never arrived (first: %s)", missing, len(acked), p)
			}
		}
	}
}
