package bridge

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// BenchmarkBridgeQoS1 measures QoS 1 throughput from 8 publishers (on 8
// or 64 topics) to one subscriber on a second Starling, both with the
// store's sync policy always (the default) or none: "direct" publishes there, "bridged"
// publishes on an edge Starling that forwards over a bridge. msg/s is
// what the subscriber receives.
//
//	go test -run '^$' -bench BridgeQoS1 -benchtime 20000x ./test/bridge/
func BenchmarkBridgeQoS1(b *testing.B) {
	for _, c := range []struct {
		mode   string
		topics int // per publisher
		sync   string
	}{{"direct", 1, "always"}, {"bridged", 1, "always"}, {"direct", 8, "always"}, {"bridged", 8, "always"},
		{"direct", 8, "none"}, {"bridged", 8, "none"}} {
		mode := c.mode
		b.Run(fmt.Sprintf("%s/topics=%d/sync=%s", mode, 8*c.topics, c.sync), func(b *testing.B) {
			_, cloudAddr := testutil.StartBroker(b, func(cfg *config.Config) { cfg.Sync = c.sync })
			pubAddr := cloudAddr
			if mode == "bridged" {
				_, pubAddr = testutil.StartBroker(b, func(cfg *config.Config) {
					cfg.Sync = c.sync
					cfg.Bridges = []config.Bridge{{Name: "cloud", Remote: "mqtt://" + cloudAddr,
						Topics: []config.BridgeTopic{{Direction: "out", Filter: "bench/#", QoS: 1}}}}
				})
			}
			got := make(chan struct{}, 1<<16)
			sub := testutil.DialPahoWith(b, cloudAddr, "bench-sub", func(p *paho.Publish) { got <- struct{}{} })
			ctx := context.Background()
			if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "bench/#", QoS: 1}}}); err != nil {
				b.Fatal(err)
			}
			const pubs = 8
			clients := make([]*testutil.Paho, pubs)
			for i := range clients {
				clients[i], _ = testutil.DialPaho(b, pubAddr, fmt.Sprint("bench-pub-", i), nil)
			}
			// One message through first: the bridge is connected.
			if _, err := clients[0].Publish(ctx, &paho.Publish{Topic: "bench/warm", QoS: 1, Payload: []byte("w")}); err != nil {
				b.Fatal(err)
			}
			select {
			case <-got:
			case <-time.After(testutil.Patience(b)):
				b.Fatal("warm-up message did not arrive")
			}
			payload := make([]byte, 64)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i, cl := range clients {
				n := b.N / pubs
				if i < b.N%pubs {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := range n {
						topic := fmt.Sprint("bench/", i, "/", k%c.topics)
						if _, err := cl.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			for range b.N {
				select {
				case <-got:
				case <-time.After(testutil.Patience(b)):
					b.Fatal("messages stopped arriving")
				}
			}
			el := time.Since(start)
			b.StopTimer()
			wg.Wait()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msg/s")
		})
	}
}
