package cluster_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/binarytest"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// proc is one node running the built binary, so that it can be killed
// with SIGKILL.
type proc struct {
	t                *testing.T
	name, addr, data string
	route            string
	peers            []string
	cluster          string
	config           string // YAML file with the cluster token
	cmd              *exec.Cmd
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin, err := binarytest.Build(t.TempDir(), "cmd/starling")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func (p *proc) start(bin string) {
	p.t.Helper()
	level := "warn"
	if os.Getenv("STARLING_TEST_LOG") != "" {
		level = "debug"
	}
	p.cmd = exec.Command(bin, "-tcp", p.addr, "-http", "", "-data", p.data, "-log-level", level,
		"-cluster-name", p.cluster, "-cluster-node", p.name, "-cluster-listen", p.route,
		"-cluster-peers", strings.Join(p.peers, ","), "-config", p.config)
	p.cmd.Stderr = os.Stderr
	// If the test process dies, so do its nodes.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	deadline := time.Now().Add(testutil.Patience(p.t))
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", p.addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.kill()
	p.t.Fatalf("%s not listening on %s", p.name, p.addr)
}

func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	p.cmd = nil
}

// seqLog records sequence numbers, safe for concurrent use.
type seqLog struct {
	mu   sync.Mutex
	seqs map[string]time.Time // "publisher/seq" of an acknowledged message -> when it was sent
}

func (l *seqLog) add(k string, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seqs[k] = sent
}

// atLeast reports an error unless each of the two publishers ("0/…",
// "1/…") has n acknowledged messages sent after since.
func (l *seqLog) atLeast(n int, since time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var per [2]int
	for k, at := range l.seqs {
		if at.After(since) && len(k) > 1 && (k[0] == '0' || k[0] == '1') && k[1] == '/' {
			per[k[0]-'0']++
		}
	}
	if per[0] < n || per[1] < n {
		return fmt.Errorf("acknowledged messages per publisher since %s: %v, want %d each", since.Format("15:04:05.000"), per, n)
	}
	return nil
}

// TestClusterNodeKilled kills one node of three with SIGKILL while QoS 1
// publishers and subscribers on the other two keep going, then restarts it.
func TestClusterNodeKilled(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	routes := freeport.Addrs(t, "127.0.0.1", 3)
	mqtt := freeport.Addrs(t, "127.0.0.1", 3)
	name := fmt.Sprintf("fault-%d", time.Now().UnixNano())
	cfgFile := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(cfgFile, []byte("cluster:\n  token: fault-test-token-0123\n"+
		// Offline sessions hold the whole run: a full queue drops by
		// design (counted), which is not what this test is about.
		"limits:\n  max_queued_messages: 100000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*proc
	for i := range 3 {
		var peers []string
		for j, r := range routes {
			if j != i {
				peers = append(peers, r)
			}
		}
		p := &proc{t: t, name: fmt.Sprintf("n%d", i+1), addr: mqtt[i], data: t.TempDir(), route: routes[i], peers: peers, cluster: name, config: cfgFile}
		p.start(bin)
		t.Cleanup(p.kill)
		nodes = append(nodes, p)
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	// The cluster is ready when a retained message published on one node
	// is seen on the others.
	ready := func(msg string, on ...*proc) {
		t.Helper()
		deadline := time.Now().Add(testutil.Patience(t))
		for _, p := range on {
			for {
				if retainedPayload(t, p.addr, "ready/flag") == msg {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s never saw retained %q", p.name, msg)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	setter := dialServing(t, n1.addr, "setter", nil)
	setter.Pub(t, &paho.Publish{Topic: "ready/flag", QoS: 1, Retain: true, Payload: []byte("one")})
	ready("one", n2, n3)

	persistent := func() *paho.Connect {
		e := uint32(600)
		return &paho.Connect{CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: &e}}
	}
	sA, _ := testutil.DialPaho(t, n1.addr, "sA", persistent())
	sA.Sub(t, paho.SubscribeOptions{Topic: "f/#", QoS: 1})
	sB, _ := testutil.DialPaho(t, n2.addr, "sB", persistent())
	sB.Sub(t, paho.SubscribeOptions{Topic: "f/#", QoS: 1})
	watcher, _ := testutil.DialPaho(t, n1.addr, "watcher", nil)
	watcher.Sub(t, paho.SubscribeOptions{Topic: "will/#", QoS: 1})
	// v lives on the node that will die: a persistent session with a will.
	cv := persistent()
	// Retained, so that a second publication of it anywhere would show.
	cv.WillMessage = &paho.WillMessage{Topic: "will/v", QoS: 1, Retain: true, Payload: []byte("v lost")}
	v, _ := testutil.DialPaho(t, n3.addr, "v", cv)
	v.Sub(t, paho.SubscribeOptions{Topic: "f/#", QoS: 1})
	warm(t, setter, "f/probe", sA, sB, v)
	// q lives on the node that will die too, offline: what is queued for
	// it there when the node dies must reach it on a surviving node.
	q, _ := testutil.DialPaho(t, n3.addr, "q", persistent())
	q.Sub(t, paho.SubscribeOptions{Topic: "f/0", QoS: 1})
	q.Disconnect(&paho.Disconnect{})
	// What v receives has reached n3 and been queued for q in the same
	// operation, which delivers nothing before the queue is replicated.
	vGot := map[string]bool{}
	vStop, vDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(vDone)
		for {
			select {
			case m := <-v.Recv:
				vGot[string(m.Payload)] = true
			case <-vStop:
				return
			}
		}
	}()

	acked := &seqLog{seqs: map[string]time.Time{}}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, p := range []*proc{n1, n2} {
		pub, _ := testutil.DialPaho(t, p.addr, fmt.Sprintf("pub%d", i), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				k := fmt.Sprintf("%d/%d", i, seq)
				sent := time.Now()
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := pub.Publish(pctx, &paho.Publish{Topic: "f/" + strconv.Itoa(i), QoS: 1, Payload: []byte(k)})
				cancel()
				if d := time.Since(sent); d > 300*time.Millisecond {
					t.Logf("publish %s acknowledged after %s (err %v), sent at %s", k, d.Round(time.Millisecond), err, sent.Format("15:04:05.000"))
				}
				if err == nil {
					acked.add(k, sent)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	// Traffic before the kill, for 2 s and until each publisher has some
	// acknowledged (a slow run may need longer).
	time.Sleep(2 * time.Second)
	brokertest.WaitFor(t, func() error { return acked.atLeast(20, time.Time{}) })
	close(vStop)
	<-vDone
	killed := time.Now()
	n3.kill()
	t.Logf("n3 killed at %s", killed.Format("15:04:05.000"))
	// q reconnects to a surviving node at once; it is refused (0x88) while
	// its session's owner cannot be asked or the replicated queue read.
	type dialed struct {
		c     *testutil.Paho
		tries int
		err   error
	}
	qc := make(chan dialed, 1)
	go func() {
		var d dialed
		for deadline := time.Now().Add(testutil.Patience(t)); ; {
			d.tries++
			c, ack, err := testutil.TryDialPaho(t, n2.addr, "q", persistent())
			if err == nil && !ack.SessionPresent {
				err = fmt.Errorf("q reconnecting to n2: session present = false")
			}
			if err == nil || time.Now().After(deadline) {
				d.c, d.err = c, err
				qc <- d
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()
	w := watcher.Expect(t, testutil.Patience(t))
	if w.Topic != "will/v" || string(w.Payload) != "v lost" {
		t.Fatalf("watcher got %q %q, want v's will", w.Topic, w.Payload)
	}
	willAt := time.Now()
	t.Logf("will published %s after the kill", willAt.Sub(killed).Round(time.Millisecond))
	// Cleared, so that it can be seen if n3 publishes it again.
	setter.Pub(t, &paho.Publish{Topic: "will/v", QoS: 1, Retain: true})
	watcher.Expect(t, testutil.Patience(t)) // the deletion itself
	// Traffic after the takeover of the lost node's sessions too, for 3 s
	// and until each publisher has some acknowledged.
	time.Sleep(3 * time.Second)
	brokertest.WaitFor(t, func() error { return acked.atLeast(20, willAt) })
	stop()
	wg.Wait()

	// Subscribers on the surviving nodes miss nothing that was acknowledged.
	acked.mu.Lock()
	want := len(acked.seqs)
	acked.mu.Unlock()
	for _, c := range []struct {
		name string
		s    *testutil.Paho
	}{{"sA", sA}, {"sB", sB}} {
		got := collect(c.s, acked.seqs, func(time.Time) bool { return true }, testutil.Patience(t))
		for k := range acked.seqs {
			if !got[k] {
				t.Fatalf("%s: acknowledged message %s lost (got %d of %d)", c.name, k, len(got), want)
			}
		}
	}

	// q gets every acknowledged message on its topic: those queued for it
	// on n3 before the kill, those on their way to n3 when it died, and
	// those published while its session had no node.
	qd := <-qc
	if qd.err != nil {
		t.Fatalf("q never reconnected after %d tries: %v", qd.tries, qd.err)
	}
	wantQ := map[string]time.Time{}
	beforeKill := 0
	for k, at := range acked.seqs {
		if strings.HasPrefix(k, "0/") {
			wantQ[k] = at
			if at.Before(killed) {
				beforeKill++
			}
		}
	}
	if beforeKill == 0 {
		t.Fatalf("publisher 0 had nothing acknowledged before the kill")
	}
	gotQ := collect(qd.c, wantQ, func(time.Time) bool { return true }, testutil.Patience(t))
	var lostQ []string
	for k, at := range wantQ {
		if !gotQ[k] {
			lostQ = append(lostQ, fmt.Sprintf("%s (sent %s after the kill)", k, at.Sub(killed).Round(time.Millisecond)))
		}
	}
	if len(lostQ) > 0 {
		t.Fatalf("q: %d of %d acknowledged messages lost (%d sent before the kill): %v", len(lostQ), len(wantQ), beforeKill, lostQ[:min(len(lostQ), 10)])
	}
	t.Logf("q, reconnected after %d tries, got all %d acknowledged messages (%d sent before the kill)", qd.tries, len(wantQ), beforeKill)

	// v comes back on another node: its session is there, and every
	// acknowledged message it had not received on n3 was kept for it,
	// including those published between the kill and the takeover.
	for more := true; more; {
		select {
		case m := <-v.Recv:
			vGot[string(m.Payload)] = true
		default:
			more = false
		}
	}
	v2, ack := testutil.DialPaho(t, n2.addr, "v", persistent())
	if !ack.SessionPresent {
		t.Fatalf("v reconnecting to n2: session present = false")
	}
	wantV := map[string]time.Time{}
	for k, at := range acked.seqs {
		if !vGot[k] {
			wantV[k] = at
		}
	}
	wait := testutil.Patience(t)
	got := collect(v2, wantV, func(time.Time) bool { return true }, wait)
	var missed []string
	for k, at := range wantV {
		if !got[k] {
			missed = append(missed, fmt.Sprintf("%s (sent %s after the kill)", k, at.Sub(killed).Round(time.Millisecond)))
		}
	}
	if len(missed) > 0 {
		// Waited for until the test's deadline allows: lost, not late.
		t.Fatalf("v: %d of %d acknowledged messages lost (not delivered within %s of reconnecting): %v",
			len(missed), want, wait.Round(time.Second), missed[:min(len(missed), 10)])
	}
	t.Logf("v got all %d acknowledged messages (%d on n3 before the kill, %d after reconnecting)", want, len(vGot), len(got))

	// The killed node rejoins and catches up on what changed meanwhile.
	setter.Pub(t, &paho.Publish{Topic: "ready/flag", QoS: 1, Retain: true, Payload: []byte("two")})
	n3.start(bin)
	ready("two", n3)
	// n3 had v's will in its store, but n1 published it already: it is
	// not published again, live or retained.
	watcher.Quiet(t, 2*time.Second)
	for _, p := range []*proc{n1, n3} {
		if got := retainedPayload(t, p.addr, "will/v"); got != "" {
			t.Fatalf("%s: retained will/v = %q after n3 rejoined: the will was published twice", p.name, got)
		}
	}
	// It gave up its stale copy of v's session: v stays connected on n2
	// and gets what is published on n3.
	pubAfter, _ := testutil.DialPaho(t, n3.addr, "after", nil)
	pubAfter.Pub(t, &paho.Publish{Topic: "f/after", QoS: 1, Payload: []byte("after")})
	for deadline := time.After(testutil.Patience(t)); ; {
		select {
		case m := <-v2.Recv:
			if string(m.Payload) != "after" {
				continue // the tail of the earlier traffic
			}
		case d := <-v2.Disc:
			t.Fatalf("v disconnected from n2 after n3 rejoined: reason 0x%02x", d.ReasonCode)
		case <-deadline:
			t.Fatalf("v on n2 did not get a message published on the rejoined n3")
		}
		break
	}
}

// collect reads messages from c until every key that need accepts has
// arrived or d passed.
func collect(c *testutil.Paho, want map[string]time.Time, need func(time.Time) bool, d time.Duration) map[string]bool {
	got := map[string]bool{}
	missing := 0
	for _, at := range want {
		if need(at) {
			missing++
		}
	}
	deadline := time.After(d)
	for missing > 0 {
		select {
		case m := <-c.Recv:
			k := string(m.Payload)
			if at, ok := want[k]; ok && !got[k] && need(at) {
				missing--
			}
			got[k] = true
		case <-deadline:
			return got
		}
	}
	return got
}

// retainedPayload subscribes a fresh client on addr and returns the
// retained message on topic, or "" if none arrives quickly.
func retainedPayload(t *testing.T, addr, topic string) string {
	c := dialServing(t, addr, fmt.Sprintf("probe-%d", time.Now().UnixNano()), nil)
	defer c.Disconnect(&paho.Disconnect{})
	c.Sub(t, paho.SubscribeOptions{Topic: topic, QoS: 1})
	select {
	case m := <-c.Recv:
		return string(m.Payload)
	case <-time.After(300 * time.Millisecond):
		return ""
	}
}

// dialServing connects, retrying while the node refuses as server
// unavailable (0x88): a cluster node does until it is ready, and while a
// session's hand-over cannot finish (its queue not read in time), as a
// client that retries would.
func dialServing(t *testing.T, addr, id string, cp *paho.Connect) *testutil.Paho {
	t.Helper()
	c, _ := dialServingAck(t, addr, id, cp)
	return c
}

// dialServingAck is dialServing, also returning the CONNACK.
func dialServingAck(t *testing.T, addr, id string, cp *paho.Connect) (*testutil.Paho, *paho.Connack) {
	t.Helper()
	for deadline := time.Now().Add(testutil.Patience(t)); ; time.Sleep(200 * time.Millisecond) {
		c, ack, err := testutil.TryDialPaho(t, addr, id, cp)
		if err == nil {
			return c, ack
		}
		if ack == nil || ack.ReasonCode != 0x88 || time.Now().After(deadline) {
			t.Fatalf("connect %s to %s: %v", id, addr, err)
		}
	}
}
