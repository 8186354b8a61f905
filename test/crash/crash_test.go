// Package crash kills the built broker with SIGKILL while QoS 1 and QoS 2
// messages flow to a persistent subscriber, restarts it, and checks the
// durability promise: every message whose PUBACK or PUBREC the publisher
// received arrives, QoS 2 ones exactly once.
package crash

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

var binary_ string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "starling-crash")
	if err != nil {
		panic(err)
	}
	binary_ = filepath.Join(dir, "starling")
	out, err := exec.Command("go", "build", "-o", binary_, "../../cmd/starling").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build starling: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// broker is the binary running on a fixed loopback port and data folder.
type broker struct {
	t    *testing.T
	addr string
	data string
	cmd  *exec.Cmd
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (b *broker) start() {
	b.t.Helper()
	args := []string{"-tcp", b.addr, "-http", "", "-data", b.data, "-log-level", "warn"}
	if cfg := os.Getenv("STARLING_CRASH_CONFIG"); cfg != "" {
		args = append(args, "-config", cfg) // e.g. to try another sync policy
	}
	b.cmd = exec.Command(binary_, args...)
	b.cmd.Stderr = os.Stderr
	// If the test process itself dies, so does its broker: nothing is left
	// running.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start broker: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", b.addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.kill()
	b.t.Fatalf("broker not listening on %s", b.addr)
}

func (b *broker) kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGKILL)
	b.cmd.Wait()
	b.cmd = nil
}

// subscriber keeps client-side state across connections: the QoS 2 packet
// IDs received and not yet released, so a resent PUBLISH is not counted
// twice (the receiver's half of exactly once).
type subscriber struct {
	mu       sync.Mutex
	count    map[uint64]int // seq -> times delivered to the application
	qos      map[uint64]byte
	released map[uint16]bool // false: received, waiting for PUBREL
}

func (s *subscriber) run(c *mqttConn) {
	for {
		p, err := c.next(0)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			if len(p.Payload) < 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(p.Payload)
			s.mu.Lock()
			switch p.QoS {
			case 1:
				s.count[seq]++
				s.qos[seq] = 1
				s.mu.Unlock()
				c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
			case 2:
				if rel, seen := s.released[p.PacketID]; !seen || rel {
					s.count[seq]++
					s.qos[seq] = 2
					s.released[p.PacketID] = false
				}
				s.mu.Unlock()
				c.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
			default:
				s.mu.Unlock()
			}
		case *packet.Ack:
			if p.Kind == packet.PUBREL {
				s.mu.Lock()
				s.released[p.PacketID] = true
				s.mu.Unlock()
				c.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
			}
		}
	}
}

// publisher sends numbered messages and remembers which were acknowledged
// (PUBACK for QoS 1, PUBREC for QoS 2); unacknowledged ones are resent on
// the next connection with the same packet ID.
type publisher struct {
	mu      sync.Mutex
	next    uint64
	flight  map[uint16]*outMsg // by packet ID
	acked   map[uint64]byte    // seq -> QoS, acknowledged by the broker
	lastPID uint16
}

type outMsg struct {
	seq  uint64
	qos  byte
	recd bool // PUBREC received, PUBREL due
}

func (p *publisher) publishPacket(id uint16, m *outMsg, dup bool) *packet.Publish {
	payload := make([]byte, 16)
	binary.BigEndian.PutUint64(payload, m.seq)
	return &packet.Publish{Topic: "crash/" + strconv.Itoa(int(m.qos)), QoS: m.qos, PacketID: id, Dup: dup, Payload: payload}
}

func (p *publisher) reader(c *mqttConn, done chan struct{}) {
	defer close(done)
	for {
		pk, err := c.next(0)
		if err != nil {
			return
		}
		a, ok := pk.(*packet.Ack)
		if !ok {
			continue
		}
		p.mu.Lock()
		m := p.flight[a.PacketID]
		switch {
		case m == nil:
		case a.Kind == packet.PUBACK && a.ReasonCode < 0x80:
			p.acked[m.seq] = 1
			delete(p.flight, a.PacketID)
		case a.Kind == packet.PUBREC && a.ReasonCode < 0x80:
			p.acked[m.seq] = 2
			m.recd = true
			c.send(&packet.Ack{Kind: packet.PUBREL, PacketID: a.PacketID})
		case a.Kind == packet.PUBCOMP:
			delete(p.flight, a.PacketID)
		}
		p.mu.Unlock()
	}
}

// resume resends what is in flight, as a reconnecting client must.
func (p *publisher) resume(c *mqttConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, m := range p.flight {
		if m.recd {
			c.send(&packet.Ack{Kind: packet.PUBREL, PacketID: id})
		} else {
			c.send(p.publishPacket(id, m, true))
		}
	}
}

// burst publishes up to n new messages, keeping at most window in flight.
func (p *publisher) burst(c *mqttConn, n, window int) {
	for i := 0; i < n; i++ {
		p.mu.Lock()
		if len(p.flight) >= window {
			p.mu.Unlock()
			time.Sleep(time.Millisecond)
			continue
		}
		p.next++
		m := &outMsg{seq: p.next, qos: byte(1 + p.next%2)}
		for {
			p.lastPID++
			if p.lastPID == 0 {
				p.lastPID = 1
			}
			if p.flight[p.lastPID] == nil {
				break
			}
		}
		id := p.lastPID
		p.flight[id] = m
		p.mu.Unlock()
		if c.send(p.publishPacket(id, m, false)) != nil {
			return
		}
	}
}

func TestCrashLoopKeepsAcknowledgedMessages(t *testing.T) {
	cycles := 20
	if v := os.Getenv("STARLING_CRASH_CYCLES"); v != "" {
		cycles, _ = strconv.Atoi(v)
	}
	b := &broker{t: t, addr: freePort(t), data: t.TempDir()}
	defer b.kill()
	sub := &subscriber{count: map[uint64]int{}, qos: map[uint64]byte{}, released: map[uint16]bool{}}
	pub := &publisher{flight: map[uint16]*outMsg{}, acked: map[uint64]byte{}}

	connect := func(first bool) (sc, pc *mqttConn, subDone, pubDone chan struct{}) {
		var err error
		var ack *packet.Connack
		if sc, ack, err = dialMQTT(b.addr, "crash-sub"); err != nil {
			t.Fatalf("subscriber connect: %v", err)
		}
		if !first && !ack.SessionPresent {
			t.Fatalf("subscriber session lost across a crash")
		}
		subDone = make(chan struct{})
		go func() { defer close(subDone); sub.run(sc) }()
		if first {
			sc.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "crash/#", QoS: 2}}})
			time.Sleep(100 * time.Millisecond) // SUBACK is consumed by run
		}
		if pc, _, err = dialMQTT(b.addr, "crash-pub"); err != nil {
			t.Fatalf("publisher connect: %v", err)
		}
		pubDone = make(chan struct{})
		go pub.reader(pc, pubDone)
		pub.resume(pc)
		return
	}

	for cycle := 0; cycle < cycles; cycle++ {
		b.start()
		sc, pc, subDone, pubDone := connect(cycle == 0)
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
					pub.burst(pc, 20, 32)
				}
			}
		}()
		time.Sleep(time.Duration(100+cycle*13%150) * time.Millisecond)
		b.kill() // SIGKILL mid-flight
		close(stop)
		sc.close()
		pc.close()
		<-subDone
		<-pubDone
	}

	// A last start: everything acknowledged must now arrive.
	b.start()
	sc, pc, subDone, pubDone := connect(false)
	deadline := time.Now().Add(20 * time.Second)
	for {
		pub.mu.Lock()
		inflight := len(pub.flight)
		pub.mu.Unlock()
		pub.mu.Lock()
		sub.mu.Lock()
		missing := 0
		for seq := range pub.acked {
			if sub.count[seq] == 0 {
				missing++
			}
		}
		sub.mu.Unlock()
		pub.mu.Unlock()
		if missing == 0 && inflight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged messages never arrived (%d still in flight at the publisher)", missing, inflight)
		}
		time.Sleep(200 * time.Millisecond)
	}
	sc.close()
	pc.close()
	<-subDone
	<-pubDone

	pub.mu.Lock()
	defer pub.mu.Unlock()
	sub.mu.Lock()
	defer sub.mu.Unlock()
	var q1, q2 int
	for seq, q := range pub.acked {
		switch q {
		case 1:
			q1++
		case 2:
			q2++
			if n := sub.count[seq]; n != 1 {
				t.Errorf("QoS 2 message %d delivered %d times", seq, n)
			}
		}
	}
	for seq, n := range sub.count {
		if sub.qos[seq] == 2 && n > 1 {
			t.Errorf("QoS 2 message %d delivered %d times", seq, n)
		}
	}
	if q1 == 0 || q2 == 0 {
		t.Fatalf("too little traffic to prove anything: %d QoS 1 and %d QoS 2 acknowledged", q1, q2)
	}
	t.Logf("%d cycles: %d QoS 1 and %d QoS 2 messages acknowledged, all delivered", cycles, q1, q2)
}
