package conn

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// countConn is a net.Conn that discards what is written, counting the
// writes and the bytes.
type countConn struct {
	net.Conn // nil: only what the writer calls is implemented
	writes   atomic.Int64
	bytes    atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(p)))
	return len(p), nil
}
func (c *countConn) SetWriteDeadline(time.Time) error { return nil }
func (c *countConn) Close() error                     { return nil }

// BenchmarkSendFanIn measures QoS 0 publishes queued to one connection by
// 8 senders that become runnable together, as the readers of a fan-in's
// publishers do when one poll finds them all readable: each queues a
// batch of 16 and is done; the next round starts once the writer has
// written them all. writes/msg is how many system calls the writer
// would make per message (1/128 when one write carries a whole round).
//
//	go test -run '^$' -bench SendFanIn -cpu 1,2 ./internal/conn/
func BenchmarkSendFanIn(b *testing.B) {
	const senders, batch = 8, 16
	nc := &countConn{}
	c := New(nc, 1<<20)
	c.SetVersion(packet.V311)
	p := &packet.Publish{Topic: "bench/fanin/0", Payload: make([]byte, 64)}
	size, _ := packet.Size(p, packet.V311)
	rounds := max(1, b.N/(senders*batch))
	b.ReportAllocs()
	b.ResetTimer()
	var want int64
	for range rounds {
		for range senders {
			go func() {
				for range batch {
					c.Send(p)
				}
			}()
		}
		want += int64(senders * batch * size)
		for nc.bytes.Load() < want {
			runtime.Gosched()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(nc.writes.Load())/float64(rounds*senders*batch), "writes/msg")
	c.Close()
}
