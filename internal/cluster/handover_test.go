package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// testNode is a broker with its cluster node and an MQTT listener.
type testNode struct {
	b    *broker.Broker
	n    *Node
	addr string
	once sync.Once // stop
}

// startNodes starts count nodes on memory stores; setup, if given, may
// replace node i's store before it starts.
func startNodes(t *testing.T, count int, setup ...func(i int, b *broker.Broker)) []*testNode {
	t.Helper()
	var routes []string
	for range count {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, ln.Addr().String())
		ln.Close()
	}
	lv := slog.LevelWarn
	if os.Getenv("STARLING_TEST_LOG") != "" {
		lv = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	name := fmt.Sprintf("unit-%d", time.Now().UnixNano())
	var out []*testNode
	for i := range count {
		var peers []string
		for j, r := range routes {
			if j != i {
				peers = append(peers, r)
			}
		}
		b := broker.New(config.Default().Limits, log)
		b.SetStore(memory.New())
		for _, f := range setup {
			f(i, b)
		}
		n, err := Start(Config{Name: name, Node: fmt.Sprintf("u%d", i+1), Listen: routes[i], Peers: peers, Logger: log}, b)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go b.HandleConn(c)
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			b.Close(time.Second)
			n.Close()
		})
		out = append(out, &testNode{b: b, n: n, addr: ln.Addr().String()})
	}
	for _, tn := range out {
		select {
		case <-tn.n.Ready():
		case <-time.After(60 * time.Second):
			t.Fatalf("node %s not ready", tn.n.Name())
		}
	}
	return out
}

// connect opens a persistent MQTT 5 session; it returns the client (nil if
// refused), the CONNACK and its received messages.
func connect(t *testing.T, addr, id string) (*paho.Client, *paho.Connack, chan *paho.Publish) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	recv := make(chan *paho.Publish, 1000)
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			recv <- pr.Packet
			return true, nil
		}}})
	e := uint32(300)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: &e}})
	if err != nil {
		nc.Close()
		return nil, ack, recv
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}); nc.Close() })
	return c, ack, recv
}

// pending counts the messages b holds for its sessions.
func pending(b *broker.Broker) int {
	inflight, queued := b.QueueTotals()
	return inflight + queued
}

// A hand-over whose transfer fails leaves the session, with every queued
// message, on its node; the connect is refused (0x88) so that the client
// retries, and the retry moves it intact.
func TestHandOverFailureKeepsSession(t *testing.T) {
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "keep", "k/#")
	const n, size = 100, 20 << 10 // several chunks
	body := func(i int) []byte { return append([]byte(fmt.Sprintf("%06d", i)), bytes.Repeat([]byte("x"), size)...) }
	for i := range n {
		if _, err := a.b.Publish("k/m", body(i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if q := pending(a.b); q == n {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("queued on u1: %d, want %d", q, n)
		}
	}

	fault := func(chunk int) error {
		if chunk == 2 {
			return errors.New("injected fault")
		}
		return nil
	}
	fetchFault.Store(&fault)
	defer fetchFault.Store(nil)
	if cl, ack, _ := connect(t, b.addr, "keep"); cl != nil || ack == nil || ack.ReasonCode != 0x88 {
		t.Fatalf("connect during a failed transfer: client %v, CONNACK %+v; want refused with 0x88", cl != nil, ack)
	}
	if !a.b.HasSession("keep") || b.b.HasSession("keep") {
		t.Fatalf("after a failed transfer: on u1 %v, on u2 %v; want only on u1", a.b.HasSession("keep"), b.b.HasSession("keep"))
	}
	if q := pending(a.b); q != n {
		t.Fatalf("after a failed transfer u1 has %d queued, want %d", q, n)
	}

	fetchFault.Store(nil)
	cl, ack, recv := connect(t, b.addr, "keep")
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("retry: CONNACK %+v, want session present", ack)
	}
	for i := range n {
		select {
		case m := <-recv:
			if !bytes.Equal(m.Payload, body(i)) {
				t.Fatalf("message %d: got %.6q", i, m.Payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d of %d did not arrive", i, n)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); a.b.HasSession("keep"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("u1 still holds the session after a committed transfer")
		}
	}
}

// An owner that hears neither commit nor abort settles the transfer by the
// sessions bucket: the session stays if the other node never took it.
func TestHandOverUnconfirmedStays(t *testing.T) {
	old := xferIdle
	xferIdle = 500 * time.Millisecond
	t.Cleanup(func() { xferIdle = old }) // after the nodes' own cleanups
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "idle", "i/#")
	if _, err := a.b.Publish("i/m", []byte("kept"), 1, false); err != nil {
		t.Fatal(err)
	}
	// u2 fetches the state and then goes quiet.
	in, err := b.n.askHandOver("u1", "idle", false)
	if err != nil || in.snap == nil || len(in.snap.Out) != 1 {
		t.Fatalf("hand-over: %v, %+v", err, in)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		a.n.xfersMu.Lock()
		open := len(a.n.xfers)
		a.n.xfersMu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("transfer still open on u1 after %v idle", xferIdle)
		}
	}
	if q := pending(a.b); !a.b.HasSession("idle") || q != 1 {
		t.Fatalf("unconfirmed transfer: session on u1 %v with %d queued, want kept with 1", a.b.HasSession("idle"), q)
	}
}

// A node that restarts and still owns its sessions (nobody took them over)
// publishes the wills it restored, once it knows that.
func TestRestartedNodePublishesOwnWills(t *testing.T) {
	t.Parallel()
	st := memory.New()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	route := ln.Addr().String()
	ln.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := func() (*broker.Broker, *Node, string) {
		b := broker.New(config.Default().Limits, log)
		b.SetStore(st)
		n, err := Start(Config{Name: "restart", Node: "r1", Listen: route, DataDir: dir, Logger: log}, b)
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go b.HandleConn(c)
			}
		}()
		t.Cleanup(func() { l.Close() })
		select {
		case <-n.Ready():
		case <-time.After(30 * time.Second):
			t.Fatal("node not ready")
		}
		return b, n, l.Addr().String()
	}
	b, n, addr := start()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: "w", Conn: nc})
	e := uint32(300)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "w", Properties: &paho.ConnectProperties{SessionExpiryInterval: &e},
		WillMessage: &paho.WillMessage{Topic: "will/w", QoS: 1, Retain: true, Payload: []byte("gone")}}); err != nil {
		t.Fatal(err)
	}
	// The node stops with the client connected: the will stays pending
	// in the store, as after a crash.
	b.Close(time.Second)
	n.Close()
	nc.Close()

	b2, n2, _ := start()
	t.Cleanup(func() { b2.Close(time.Second); n2.Close() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ms, _ := b2.RetainedMatching("will/w", 1); len(ms) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted node did not publish the will of its own session")
		}
	}
}

// Messages queued for a session on its old node while its state is on the
// way to the new node go with it too.
func TestHandOverKeepsMessagesQueuedDuringTransfer(t *testing.T) {
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "late", "l/#")
	const n, late, size = 60, 5, 20 << 10 // several chunks
	body := func(i int) []byte { return append([]byte(fmt.Sprintf("%06d", i)), bytes.Repeat([]byte("x"), size)...) }
	for i := range n {
		if _, err := a.b.Publish("l/m", body(i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	// While u2 fetches the state, more is published for the session on u1.
	fault := func(chunk int) error {
		if chunk == 1 {
			for i := n; i < n+late; i++ {
				if _, err := a.b.Publish("l/m", body(i), 1, false); err != nil {
					return err
				}
			}
		}
		return nil
	}
	fetchFault.Store(&fault)
	defer fetchFault.Store(nil)
	cl, ack, recv := connect(t, b.addr, "late")
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("move: CONNACK %+v, want session present", ack)
	}
	for i := range n + late {
		select {
		case m := <-recv:
			if !bytes.Equal(m.Payload, body(i)) {
				t.Fatalf("message %d: got %.6q", i, m.Payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d of %d did not arrive", i, n+late)
		}
	}
}

// A message published on the old node just after a session has left it,
// before the new node has installed the session or the old node has
// read the new owner from the sessions bucket, follows the session.
func TestPublishedAsSessionLeavesFollowsIt(t *testing.T) {
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "mover", "mv/#")
	waitRecorded(t, a, "mover")
	const late = 3
	hook := func(id string) {
		if id != "mover" {
			return
		}
		for i := range late {
			if _, err := a.b.Publish("mv/x", fmt.Appendf(nil, "late%d", i), 1, false); err != nil {
				t.Errorf("publish on the old node: %v", err)
			}
		}
	}
	committedHook.Store(&hook)
	defer committedHook.Store(nil)
	cl, ack, recv := connect(t, b.addr, "mover")
	if cl == nil || !ack.SessionPresent {
		t.Fatalf("move: CONNACK %+v, want session present", ack)
	}
	expectAll(t, recv, payloads("late", late))
}

// A claim whose write landed but whose answer was lost is refused, and the
// client's retry finds the session, with its queued messages, although
// the record already names the new node.
func TestClaimRetriedAfterLostAnswer(t *testing.T) {
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	parkSession(t, a.addr, "unsure", "un/#")
	waitRecorded(t, a, "unsure")
	const queued = 5
	for i := range queued {
		if _, err := a.b.Publish("un/x", fmt.Appendf(nil, "q%d", i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	fault := func() error { return errors.New("no response from stream (test)") }
	claimWriteFault.Store(&fault)
	cl, ack, _ := connect(t, b.addr, "unsure")
	claimWriteFault.Store(nil)
	if cl != nil {
		t.Fatalf("connect went ahead after its claim seemed to fail: CONNACK %+v", ack)
	}
	if owner, err := b.n.readOwner("unsure"); err != nil || owner != "u2" {
		t.Fatalf("record names %q (%v), want u2: the fault should follow a landed write", owner, err)
	}
	recv := reconnectUntil(t, b.addr, "unsure")
	expectAll(t, recv, payloads("q", queued))
	if a.b.HasSession("unsure") {
		t.Fatal("the old node still holds the session after it moved")
	}
}
