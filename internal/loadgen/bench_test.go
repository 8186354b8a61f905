package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/testutil"
)

// BenchmarkBrokerFanout runs starling-bench's fan-out scenario (1 publisher,
// 100 subscribers, QoS 0, closed loop) against an in-process broker for 3 s
// per iteration and reports delivered msg/s. It exists to profile the whole
// broker under load, tool and broker in one process:
//
//	go test ./internal/loadgen -run '^$' -bench BrokerFanout -benchtime 1x -cpuprofile cpu.out
//	go tool pprof -top -focus 'starling/internal/(broker|conn|session|topic|packet|transport)' cpu.out
func BenchmarkBrokerFanout(b *testing.B) {
	_, addr := testutil.StartBroker(b, nil)
	var delivered float64
	for b.Loop() {
		r, err := Run(context.Background(), Config{URL: "tcp://" + addr, Scenario: FanOut, Subs: 100,
			Duration: 3 * time.Second, Warmup: 500 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Check(); err != nil {
			b.Error(err)
		}
		delivered += r.DeliveredPerSec
	}
	b.ReportMetric(delivered/float64(b.N), "delivered/s")
}
