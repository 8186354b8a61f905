package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// TestMain runs up to 4 tests at once. Each test starts its own cluster
// and mostly waits on cluster time (JetStream elections, heartbeats, a
// node declared lost after deadAfter of silence), not on the CPU: run one
// at a time, the package took 265 s of wall time for 58 s of CPU.
// With 8 at once on a loaded 2-core machine, heartbeats starved and a
// node's lease lapsed mid-test.
//
// Tests that set a package-level hook or timing that does not name a
// client (fetchFault, claimWriteFault, commitReplyFault, retainFault,
// connectHold, xferIdle, plainQueue, retainTries) do not call t.Parallel:
// Go runs every such test to its end before the parallel ones start, so a
// hook reaches only the nodes of the test that set it. Hooks that name a
// client (claimedHook, committedHook, recoveredHook, takeOverReadHook,
// takeOverWaitHook, takenOverHook) go through onClientHook, and
// claimMuted names a node of the test's own: tests that use only those
// may run in parallel.
func TestMain(m *testing.M) {
	os.Exit(brokertest.RunParallel(m, 4))
}

// clientHooks holds, for each package-level hook that receives a client
// ID, the function each test registered for a client ID of its own.
var clientHooks = struct {
	sync.Mutex
	by map[*atomic.Pointer[func(string)]]map[string]func(string)
}{by: map[*atomic.Pointer[func(string)]]map[string]func(string){}}

// onClientHook makes hook call f when it runs for client id, until stop
// is called or the test ends. The hook stays set, to a dispatcher that
// calls only the function registered for the client it runs for, so
// parallel tests can hook clients of their own: id must be used by no
// other test of the package (it is checked among those hooked).
func onClientHook(t *testing.T, hook *atomic.Pointer[func(clientID string)], id string, f func(clientID string)) (stop func()) {
	t.Helper()
	clientHooks.Lock()
	defer clientHooks.Unlock()
	m := clientHooks.by[hook]
	if m == nil {
		m = map[string]func(string){}
		clientHooks.by[hook] = m
		dispatch := func(clientID string) {
			clientHooks.Lock()
			f := clientHooks.by[hook][clientID]
			clientHooks.Unlock()
			if f != nil {
				f(clientID)
			}
		}
		hook.Store(&dispatch)
	}
	if _, dup := m[id]; dup {
		t.Fatalf("client %q is hooked by another test: hooked client IDs must be unique", id)
	}
	m[id] = f
	var once sync.Once
	stop = func() {
		once.Do(func() {
			clientHooks.Lock()
			delete(m, id)
			clientHooks.Unlock()
		})
	}
	t.Cleanup(stop)
	return stop
}

// testNode is a broker with its cluster node and an MQTT listener.
type testNode struct {
	b    *broker.Broker
	n    *Node
	addr string
	once sync.Once // stop
}

func testLogger() *slog.Logger {
	lv := slog.LevelWarn
	if os.Getenv("STARLING_TEST_LOG") != "" {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
}

// peersOf is every route but routes[i].
func peersOf(routes []string, i int) []string {
	var peers []string
	for j, r := range routes {
		if j != i {
			peers = append(peers, r)
		}
	}
	return peers
}

// startMember starts b's cluster node with cfg and serves b's MQTT on a
// loopback listener; both stop at the test's end, or at tn.stop.
func startMember(t *testing.T, cfg Config, b *broker.Broker) *testNode {
	t.Helper()
	n, err := Start(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	addr, stopListening := brokertest.Listen(t, b.HandleConn)
	tn := &testNode{b: b, n: n, addr: addr}
	t.Cleanup(func() { stopListening(); tn.stop() })
	return tn
}

// startSolo starts a cluster of one node on a memory store, ready.
func startSolo(t *testing.T, local bool) *testNode {
	t.Helper()
	b := broker.New(config.Default().Limits, slog.New(slog.DiscardHandler))
	b.SetStore(memory.New())
	tn := startMember(t, Config{Name: fmt.Sprintf("one-%d", time.Now().UnixNano()), Node: "solo", Listen: freeport.Addr(t), LocalQueues: local}, b)
	waitReady(t, tn)
	return tn
}

// startNodes starts count nodes, u1 to u<count>, on memory stores; setup,
// if given, may replace node i's store before it starts.
func startNodes(t *testing.T, count int, setup ...func(i int, b *broker.Broker)) []*testNode {
	t.Helper()
	return startNamedNodes(t, "u", count, setup...)
}

// startNamedNodes is startNodes with the nodes named <prefix>1 to
// <prefix><count>, for a test that sets a hook naming a node (claimMuted)
// while others run.
func startNamedNodes(t *testing.T, prefix string, count int, setup ...func(i int, b *broker.Broker)) []*testNode {
	t.Helper()
	routes := freeport.Addrs(t, "127.0.0.1", count)
	log := testLogger()
	name := fmt.Sprintf("unit-%d", time.Now().UnixNano())
	var out []*testNode
	for i := range count {
		b := broker.New(config.Default().Limits, log)
		b.SetStore(memory.New())
		for _, f := range setup {
			f(i, b)
		}
		out = append(out, startMember(t, Config{Name: name, Node: fmt.Sprintf("%s%d", prefix, i+1), Listen: routes[i], Peers: peersOf(routes, i), Logger: log}, b))
	}
	for _, tn := range out {
		waitReady(t, tn)
	}
	return out
}

// clusterMember starts node i of a cluster whose nodes listen on routes,
// with its broker on st and JetStream in dir.
func clusterMember(t *testing.T, name string, routes []string, i int, st store.Store, dir string, lim config.Limits, log *slog.Logger) *testNode {
	t.Helper()
	b := broker.New(lim, log)
	b.SetStore(st)
	return startMember(t, Config{Name: name, Node: fmt.Sprintf("u%d", i+1), Listen: routes[i], Peers: peersOf(routes, i), DataDir: dir, Logger: log}, b)
}

// stop closes the node's broker and cluster member (once).
func (tn *testNode) stop() {
	tn.once.Do(func() {
		tn.b.Close(time.Second)
		tn.n.Close()
	})
}

func waitReady(t *testing.T, tn *testNode) {
	t.Helper()
	select {
	case <-tn.n.Ready():
	case <-time.After(brokertest.Patience(t)):
		t.Fatalf("node %s not ready", tn.n.Name())
	}
}

// waitFor polls cond until it holds, failing after brokertest.Patience.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	brokertest.WaitFor(t, func() error {
		if !cond() {
			return fmt.Errorf("%s: not yet", what)
		}
		return nil
	})
}

// connect opens a persistent MQTT 5 session; it returns the client (nil if
// refused), the CONNACK and its received messages.
func connect(t *testing.T, addr, id string) (*paho.Client, *paho.Connack, chan *paho.Publish) {
	t.Helper()
	e := uint32(300)
	c, ack, err := brokertest.TryDialPaho(t, addr, id, &paho.Connect{CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: &e}})
	if err != nil {
		return nil, ack, nil
	}
	return c.Client, ack, c.Recv
}

// reconnectUntil connects id to addr until a connect is accepted with its
// session present.
func reconnectUntil(t *testing.T, addr, id string) chan *paho.Publish {
	t.Helper()
	var recv chan *paho.Publish
	retry(t, func() error {
		c, ack, r := connect(t, addr, id)
		if c == nil {
			return fmt.Errorf("%s refused (last CONNACK %+v)", id, ack)
		}
		if !ack.SessionPresent {
			t.Fatalf("%s: session present = false", id)
		}
		recv = r
		return nil
	})
	return recv
}

// retry calls try every 300 ms until it returns nil (a connect refused
// while a session's node is being replaced is retried), failing after
// brokertest.Patience; it returns the number of calls.
func retry(t *testing.T, try func() error) int {
	t.Helper()
	return brokertest.Poll(t, 300*time.Millisecond, brokertest.Patience(t), try)
}

// pending counts the messages b holds for its sessions.
func pending(b *broker.Broker) int {
	inflight, queued := b.QueueTotals()
	return inflight + queued
}

// waitPending waits until tn's sessions hold at least count messages.
func waitPending(t *testing.T, tn *testNode, count int) {
	t.Helper()
	brokertest.WaitFor(t, func() error {
		if got := pending(tn.b); got < count {
			return fmt.Errorf("%s holds %d messages, want %d", tn.n.Name(), got, count)
		}
		return nil
	})
}

// waitRecorded waits until tn's mirror of the sessions bucket holds id's
// persistent session record.
func waitRecorded(t *testing.T, tn *testNode, id string) {
	t.Helper()
	brokertest.WaitFor(t, func() error {
		tn.n.ownersMu.Lock()
		m, ok := tn.n.owners[key(id)]
		tn.n.ownersMu.Unlock()
		if !ok || m.rec.Session == nil {
			return fmt.Errorf("%s's session never recorded", id)
		}
		return nil
	})
}

// waitIndexed waits until tn knows of a persistent session on node whose
// subscription matches topic (its record, subscriptions included, has
// come through the sessions bucket).
func waitIndexed(t *testing.T, tn *testNode, topic, node string) {
	t.Helper()
	brokertest.WaitFor(t, func() error {
		if len(tn.n.persistentTargets(&session.Message{Topic: topic, QoS: 1})[node]) == 0 {
			return fmt.Errorf("%s never learned of a persistent subscriber to %s on %s", tn.n.Name(), topic, node)
		}
		return nil
	})
}

// waitInterest waits until tn has heard of interest in topic.
func waitInterest(t *testing.T, tn *testNode, topic string) {
	t.Helper()
	brokertest.WaitFor(t, func() error {
		if !tn.n.HasInterest(topic) {
			return fmt.Errorf("%s never learned of interest in %s", tn.n.Name(), topic)
		}
		return nil
	})
}

// raw is a bare MQTT 3.1.1 connection.
type raw = brokertest.Raw

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	return brokertest.Dial(t, addr, packet.V311)
}

// reconnectRaw connects id over a raw MQTT 3.1.1 connection to addr until
// the connect is accepted.
func reconnectRaw(t *testing.T, addr, id string) (*raw, *packet.Connack) {
	t.Helper()
	var c *raw
	var ack *packet.Connack
	retry(t, func() error {
		c = dialRaw(t, addr)
		if ack = c.Connect(id, false); ack.ReasonCode != 0 {
			c.Close()
			return fmt.Errorf("%s refused on %s: 0x%02x", id, addr, byte(ack.ReasonCode))
		}
		return nil
	})
	return c, ack
}

func sub(t *testing.T, c *paho.Client, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
}

// publishAll publishes count QoS 1 messages "<prefix><i>" on topic from c,
// each acknowledged before the next.
func publishAll(t *testing.T, c *paho.Client, topic, prefix string, count int) {
	t.Helper()
	for i := range count {
		ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
		_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: fmt.Appendf(nil, "%s%d", prefix, i)})
		cancel()
		if err != nil {
			t.Fatalf("publish %s%d: %v", prefix, i, err)
		}
	}
}

// parkSession leaves a persistent session for id on addr, subscribed to
// filter at QoS 1, with its client disconnected.
func parkSession(t *testing.T, addr, id, filter string) {
	t.Helper()
	c, _, _ := connect(t, addr, id)
	if c == nil {
		t.Fatalf("%s refused", id)
	}
	sub(t, c, filter)
	c.Disconnect(&paho.Disconnect{})
}

// expectAll waits for every payload in want on recv (repeats allowed).
func expectAll(t *testing.T, recv chan *paho.Publish, want []string) {
	t.Helper()
	got := make(map[string]bool)
	missing := func() []string {
		var out []string
		for _, w := range want {
			if !got[w] {
				out = append(out, w)
			}
		}
		return out
	}
	timeout := time.After(brokertest.Patience(t))
	for len(missing()) > 0 {
		select {
		case m := <-recv:
			got[string(m.Payload)] = true
		case <-timeout:
			t.Fatalf("%d of %d acknowledged messages never arrived: %v", len(missing()), len(want), missing())
		}
	}
}

func payloads(prefix string, count int) []string {
	out := make([]string, count)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}
