package conn

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

// tracked is a QoS 0 delivery that notes a use after its release and a
// second release: what a pooled message's delivery must never see.
type tracked struct {
	topic    string
	latest   bool
	released atomic.Int32
	bad      *atomic.Int64
}

func (p *tracked) Type() packet.Type           { return packet.PUBLISH }
func (p *tracked) QoSLevel() byte              { return 0 }
func (p *tracked) LatestTopic() (string, bool) { return p.topic, p.latest }
func (p *tracked) MessageSize() int            { return len(p.topic) + 100 }
func (p *tracked) FromHeld() bool              { return false }
func (p *tracked) use()                        { p.check() }
func (p *tracked) check() {
	if p.released.Load() != 0 {
		p.bad.Add(1)
	}
}
func (p *tracked) AppendPacket(dst []byte, v byte) ([]byte, error) {
	p.use()
	return packet.Append(dst, &packet.Publish{Topic: p.topic, Payload: make([]byte, 100)}, v)
}
func (p *tracked) Release() {
	if p.released.Add(1) != 1 {
		p.bad.Add(1000) // released twice
	}
}

type failGate struct{}

func (failGate) Done() <-chan struct{} { c := make(chan struct{}); close(c); return c }
func (failGate) OK() bool              { return false }

// TestPooledReleaseOncePerDelivery: deliveries sent by many publishers at
// once to a slow reader, replaced by newer ones of their topic, dropped by
// each policy, behind passed and failed gates, and cut by a close in the
// middle, are each released at most once and never encoded after their
// release (a pooled message would otherwise go back to its pool twice or
// be read once reused).
func TestPooledReleaseOncePerDelivery(t *testing.T) {
	for _, shed := range []int{ShedNone, ShedNewest, ShedOldest} {
		t.Run(fmt.Sprint("shed", shed), func(t *testing.T) {
			srv, cli := net.Pipe()
			c := New(srv, 1<<20)
			c.SetVersion(packet.V311)
			c.SetShed(shed)
			c.SetShared(&Shared{MaxQueuedBytes: 64 << 10})
			var bad atomic.Int64
			var all []*tracked
			var mu sync.Mutex
			readDone := make(chan struct{})
			go func() {
				defer close(readDone)
				buf := make([]byte, 512)
				for i := 0; i < 400; i++ {
					if _, err := cli.Read(buf); err != nil {
						return
					}
				}
				cli.Close() // gone mid-stream
			}()
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 3000 {
						p := &tracked{topic: fmt.Sprintf("t/%d", i%7), latest: (g+i)%3 == 0, bad: &bad}
						mu.Lock()
						all = append(all, p)
						mu.Unlock()
						switch i % 5 {
						case 0:
							c.SendGated(doneGate{}, p)
						case 1:
							c.SendGated(failGate{}, p)
						default:
							c.Send(p)
						}
					}
				}()
			}
			wg.Wait()
			c.Close() // whatever is still queued is cut
			<-c.Done()
			<-readDone
			if n := bad.Load(); n != 0 {
				t.Fatalf("%d uses after release, %d double releases", n%1000, n/1000)
			}
			twice := 0
			for _, p := range all {
				if p.released.Load() > 1 {
					twice++
				}
			}
			if twice > 0 {
				t.Fatalf("%d deliveries released more than once", twice)
			}
		})
	}
}
