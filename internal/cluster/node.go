// Package cluster joins Starling nodes into one broker over an embedded NATS
// server: NATS routes connect the nodes, core NATS carries messages (with
// subscription interest, so a node only receives what its clients
// subscribe to) and session hand-over requests, and JetStream key-value
// buckets, replicated across nodes, hold retained messages and who owns
// each session. Without a cluster configured, none of this runs.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/broker"
)

// plainQueue is how many messages from other nodes may wait for delivery
// on this node, in one queue for all normal subscriptions (one queue keeps
// the order they arrived in) and in each $share queue subscription. When
// the broker falls that far behind, NATS drops what arrives (the newest,
// as a full session queue does), reports a slow consumer (logged) and the
// drops are counted in mqtt_cluster_messages_dropped_total (per NATS
// message: a batch counts once). The normal queue is bounded in NATS
// messages only, so it may hold up to plainQueue times the largest message
// or batch (batch.go); each $share queue also stops at shareQueueBytes. A
// variable for tests.
var plainQueue = 8192

const shareQueueBytes = 64 << 20

// Config says how a node joins its cluster.
type Config struct {
	Name    string   // cluster name; every node uses the same
	Node    string   // this node's name, unique in the cluster
	Listen  string   // host:port other nodes connect to
	Peers   []string // the other nodes' Listen addresses
	Token   string   // shared secret for routes; "" for none
	DataDir string   // JetStream storage; "" keeps it in memory
	// LocalQueues leaves persistent sessions' queued and inflight
	// messages out of the replicated stream (config cluster.local_queues).
	LocalQueues bool
	// MaxPayload bounds one message on the backplane: the broker's maximum
	// packet size plus room for the envelope.
	MaxPayload int
	Logger     *slog.Logger
}

// routeUser is the user name nodes present with the cluster token.
const routeUser = "starling"

// Bucket names of the replicated state.
const (
	sessionsBucket = "starling_sessions"
	retainedBucket = "starling_retained"
)

const (
	claimTimeout = 3 * time.Second  // for a hand-over reply from the owner
	readyWait    = 5 * time.Second  // a CONNECT waits this long for the buckets
	kvTimeout    = 10 * time.Second // one key-value operation
	// embeddedConnectTimeout bounds the handshake of a connection to the
	// node's own embedded server.
	embeddedConnectTimeout = 10 * time.Second
)

// Node is this process's member of the cluster; it implements
// broker.Backplane.
type Node struct {
	cfg      Config
	log      *slog.Logger
	b        *broker.Broker
	ns       *server.Server
	acct     *server.Account
	pc       *nats.Conn               // publishes messages and serves hand-over requests
	sc       *nats.Conn               // holds the interest subscriptions
	bc       *nats.Conn               // heartbeats, apart from the traffic they must not wait behind
	instance uint64                   // this run's identity in message headers
	started  atomic.Bool              // Run has connected pc and sc
	stopping atomic.Bool              // BeginShutdown was called: nothing more is confirmed or taken over
	leaving  atomic.Pointer[[]string] // persistent sessions whose clients were connected at BeginShutdown
	lease    lease                    // liveness and fencing (lease.go)
	muted    atomic.Bool              // tests: the node neither sends nor hears heartbeats, as if frozen
	holdMir  atomic.Bool              // tests: queue-stream writes wait unsent until the node is fenced, as if cut off
	later    laterSet                 // QoS 2 messages named, not sent yet (later.go)
	watched  atomic.Uint64            // watchPeers' rounds, for tests
	tmpDir   string                   // JetStream storage when DataDir is empty

	pubMu sync.Mutex // orders sequence numbers with publication
	seq   uint64
	out   outbox // forwarded, not yet published (batch.go)

	subjects subjectCache // recent topics' subjects (batch.go)

	plain chan *nats.Msg // every normal-subscription message, in arrival order

	interestMu     sync.Mutex
	interestOps    []interestOp
	interestSignal chan struct{}
	subsMu         sync.Mutex // guards interestSubs and gone against the metrics reader
	interestSubs   map[interestKey][]*nats.Subscription
	gone           uint64 // messages dropped by subscriptions since removed

	kvMu        sync.Mutex
	retainQueue map[string]*retainWrite // latest unwritten retained change per topic
	retainOrder []string                // retainQueue's keys in first-queued order
	// rpend holds, per topic, the sequence number of this node's latest
	// retained write not yet seen back from the bucket.
	rpend map[string]uint64
	rseq  atomic.Uint64
	// retainFailed counts retained changes given up on after retries.
	retainFailed atomic.Uint64
	sessionQueue map[string]*broker.SessionSnapshot // latest change per session; nil: ended
	sessionOrder []string                           // sessionQueue's keys in first-queued order
	kvSignal     chan struct{}

	// owners mirrors the sessions bucket (key -> record and revision), so
	// taking over a lost node needs no listing while the cluster is busy
	// re-electing leaders.
	ownersMu sync.Mutex
	owners   map[string]mirrored

	// Sessions being handed over to other nodes, by transfer ID; each is
	// kept here until the new owner confirms or the transfer times out.
	xfersMu   sync.Mutex
	xfers     map[string]*outgoing
	committed map[string]*committedXfer // commits' answers, until the new node has them
	chunk     int                       // bytes of session state per transfer message

	// What the routes taught about the peers: every name seen since the
	// start, and the name behind configured addresses this node dialled.
	peersMu  sync.Mutex
	seen     map[string]bool
	addrName map[string]string

	mir    mirror       // persistent sessions' deliveries in the queue stream
	rel    relay        // confirmed forwarding to other nodes' persistent sessions
	direct seenSet      // messages routed here directly, which the relay must not deliver again
	arr    arrivals     // sessions being claimed, not yet installed (arrive.go)
	fulls  fullSessions // sessions here whose fullness other nodes are told of (pause.go)
	pause  pauses       // full sessions elsewhere this node's publishers wait for (pause.go)

	ready    chan struct{} // closed once the buckets exist
	sessions jetstream.KeyValue
	retained jetstream.KeyValue

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type interestKey struct{ group, filter string }

type mirrored struct {
	rev uint64
	rec record
}

type interestOp struct {
	interestKey
	on bool
}

// record is a session's entry in the sessions bucket: its owner and, for
// persistent sessions, the subscriptions to recover if the owner is lost.
type record struct {
	Node    string                  `json:"node"`
	Session *broker.SessionSnapshot `json:"session,omitempty"`
	// From is the node a claim took the session from, until the new
	// owner records the session itself: if the claim's write landed but
	// its answer was lost, the claim's retry takes it from there again.
	From string `json:"from,omitempty"`
}

// New builds a node and plugs it into b as its backplane, opening
// nothing yet. Call it before b.Restore, so that restored subscriptions
// announce their interest and restored wills wait for the cluster, and
// Run once Restore has returned: nothing from the other nodes may reach
// the broker while its store is loading. Close stops it.
func New(cfg Config, b *broker.Broker) (*Node, error) {
	if cfg.Name == "" || cfg.Listen == "" {
		return nil, errors.New("cluster: name and listen address are required")
	}
	if _, portStr, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("cluster: listen address %q: %w", cfg.Listen, err)
	} else if _, err := strconv.Atoi(portStr); err != nil {
		return nil, fmt.Errorf("cluster: listen port %q: %w", portStr, err)
	}
	if cfg.Node == "" {
		cfg.Node = DefaultNodeName(cfg.Listen)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Node), b: b,
		plain: make(chan *nats.Msg, plainQueue), interestSignal: make(chan struct{}, 1), kvSignal: make(chan struct{}, 1),
		interestSubs: make(map[interestKey][]*nats.Subscription), ready: make(chan struct{}), owners: make(map[string]mirrored), xfers: make(map[string]*outgoing), retainQueue: make(map[string]*retainWrite), rpend: make(map[string]uint64), seen: make(map[string]bool), addrName: make(map[string]string), sessionQueue: make(map[string]*broker.SessionSnapshot)}
	n.out.init()
	n.mir.acks = make(chan mirrorAck, maxMirrorPending)
	n.mir.purges = make(map[string]uint64)
	n.mir.rm = make(map[string][]uint64)
	n.mir.last = make(map[revKey]lastRev)
	n.mir.purgeCh = make(chan struct{}, 1)
	var id [8]byte
	rand.Read(id[:])
	n.instance = binary.BigEndian.Uint64(id[:])
	n.rel.init(n.instance)
	n.lease.init()
	if cfg.LocalQueues {
		b.SetBackplane(localQueues{n})
	} else {
		b.SetBackplane(n)
	}
	return n, nil
}

// Start is New, b.Restore and Run, in that order.
func Start(cfg Config, b *broker.Broker) (*Node, error) {
	n, err := New(cfg, b)
	if err != nil {
		return nil, err
	}
	if err := b.Restore(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := n.Run(); err != nil {
		return nil, err
	}
	return n, nil
}

// Run starts the embedded NATS server and joins the peers; the broker
// must be restored already (New). On error the node is closed.
func (n *Node) Run() error {
	select {
	case <-n.b.Restored():
	default:
		return errors.New("cluster: run before the broker's store is restored")
	}
	if n.started.Load() {
		return errors.New("cluster: run twice")
	}
	cfg := n.cfg
	host, portStr, _ := net.SplitHostPort(cfg.Listen)
	port, _ := strconv.Atoi(portStr)
	var err error
	storeDir := cfg.DataDir
	if storeDir == "" {
		if n.tmpDir, err = os.MkdirTemp("", "starling-cluster-"); err != nil {
			return fmt.Errorf("cluster: jetstream directory: %w", err)
		}
		storeDir = n.tmpDir
	}
	var routes []string
	for _, p := range cfg.Peers {
		u := url.URL{Scheme: "nats", Host: p}
		if cfg.Token != "" {
			u.User = url.UserPassword(routeUser, cfg.Token)
		}
		routes = append(routes, u.String())
	}
	maxPayload := max(cfg.MaxPayload, 1<<20)
	var tok [16]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	opts := &server.Options{
		ServerName: cfg.Node,
		// The embedded server routes only once its client listener is up,
		// so it gets one: loopback, a random port, and a random token that
		// only this process knows. Starling itself connects in-process.
		Host:          "127.0.0.1",
		Port:          server.RANDOM_PORT,
		Authorization: token,
		NoSigs:        true,
		JetStream:     true,
		StoreDir:      storeDir,
		// Topics may be up to 64 KiB and become subjects (a third longer
		// once encoded), and messages up to the maximum packet size.
		// The queue stream's entries carry a message base64-encoded in
		// JSON: room for a third more.
		MaxControlLine: 1 << 17,
		MaxPayload:     int32(min(maxPayload*4/3+64<<10, 64<<20)),
		MaxPending:     int64(min(maxPayload, 64<<20)) * 2,
	}
	if opts.MaxPending < 64<<20 {
		opts.MaxPending = 64 << 20
	}
	if len(routes) > 0 {
		opts.Cluster = server.ClusterOpts{Name: cfg.Name, Host: host, Port: port}
		if cfg.Token != "" {
			// Routes from a node without the token are refused.
			opts.Cluster.Username, opts.Cluster.Password = routeUser, cfg.Token
		}
		opts.Routes = server.RoutesFromStr(joinComma(routes))
	} else {
		// A cluster of one: NATS's clustered JetStream waits for a route
		// that never comes (and RoutesFromStr("") is one empty route), so
		// the node runs a standalone JetStream, with replicas of one, and
		// opens no cluster port. Growing the cluster means listing peers
		// and restarting.
		cfg.Logger.Info("cluster of one node: no peers, cluster port not opened", "cluster", cfg.Name, "node", cfg.Node)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		n.cleanup()
		return fmt.Errorf("cluster: nats server: %w", err)
	}
	// The embedded server reports a cluster port it cannot bind as a
	// fatal error and runs on without it, a node that would never become
	// ready: it ends the start instead, as an MQTT port that is taken does.
	fatal := make(chan string, 1)
	ns.SetLoggerV2(natsLogger{n.log, fatal}, false, false, false)
	ns.Start()
	clustered := len(routes) > 0
	for deadline := time.Now().Add(10 * time.Second); !ns.Running() || ns.Addr() == nil || (clustered && ns.ClusterAddr() == nil); {
		select {
		case msg := <-fatal:
			ns.Shutdown()
			n.cleanup()
			return fmt.Errorf("cluster: cluster port %s: %s", cfg.Listen, msg)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			n.cleanup()
			return fmt.Errorf("cluster: nats server on %s did not start", cfg.Listen)
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.ns, n.acct = ns, ns.GlobalAccount()
	// The handshake with the embedded server gets more than the client's
	// default 2 s: a starved process (a node start under load average 29
	// in a test run) missed it, and the node is not ready before anyway.
	connect := func(name string) (*nats.Conn, error) {
		return nats.Connect("", nats.InProcessServer(ns), nats.Token(token), nats.Name(name), nats.MaxReconnects(-1),
			nats.Timeout(embeddedConnectTimeout),
			nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
				n.log.Warn("cluster connection error", "conn", name, "err", err)
			}))
	}
	if n.pc, err = connect("starling-pub"); err == nil {
		n.sc, err = connect("starling-sub")
	}
	if err == nil {
		n.bc, err = connect("starling-beat")
	}
	if err != nil {
		n.Close()
		return fmt.Errorf("cluster: connect to embedded server: %w", err)
	}
	n.chunk = min(int(opts.MaxPayload)-8<<10, maxChunk)
	if _, err := n.pc.Subscribe(claimPrefix+key(cfg.Node), n.serveClaim); err != nil {
		n.Close()
		return fmt.Errorf("cluster: claim subscription: %w", err)
	}
	if _, err := n.pc.Subscribe(whoisPrefix+key(cfg.Listen), func(m *nats.Msg) { m.Respond([]byte(cfg.Node)) }); err != nil {
		n.Close()
		return fmt.Errorf("cluster: whois subscription: %w", err)
	}
	if _, err := n.pc.Subscribe(xferPrefix+key(cfg.Node), n.serveTransfer); err != nil {
		n.Close()
		return fmt.Errorf("cluster: transfer subscription: %w", err)
	}
	if _, err := n.pc.Subscribe(n.rel.self, n.confirmed); err != nil {
		n.Close()
		return fmt.Errorf("cluster: confirmation subscription: %w", err)
	}
	if _, err := n.pc.Subscribe(flowPrefix+"*", n.heardFlow); err != nil {
		n.Close()
		return fmt.Errorf("cluster: flow subscription: %w", err)
	}
	if _, err := n.bc.Subscribe(beatPrefix+">", n.heardBeat); err != nil {
		n.Close()
		return fmt.Errorf("cluster: heartbeat subscription: %w", err)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.wg.Add(10)
	go n.pauseLoop()
	go n.outLoop()
	go n.beatLoop()
	go n.fenceLoop()
	go n.confirmLoop()
	go n.watchPeers()
	go n.interestLoop()
	go n.receiveLoop()
	go n.kvLoop()
	go n.setup(len(cfg.Peers) + 1)
	n.started.Store(true)
	return nil
}

// localQueues is the node as a backplane that does not mirror deliveries:
// embedding the interface hides MirrorDeliveries from the broker.
type localQueues struct{ broker.Backplane }

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

// setup creates the replicated buckets, retrying while the cluster elects
// its JetStream leader, then follows the retained bucket.
func (n *Node) setup(size int) {
	defer n.wg.Done()
	js, err := jetstream.New(n.pc)
	if err != nil {
		n.log.Error("cluster: jetstream", "err", err)
		return
	}
	replicas := min(size, 3)
	storage := jetstream.FileStorage
	open := func(bucket string) jetstream.KeyValue {
		var kv jetstream.KeyValue
		if !n.untilSetUp("bucket "+bucket, func(ctx context.Context) error {
			var err error
			kv, err = js.KeyValue(ctx, bucket)
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: replicas, Storage: storage})
			}
			return err
		}) {
			return nil
		}
		return kv
	}
	if n.sessions = open(sessionsBucket); n.sessions == nil {
		return
	}
	if n.retained = open(retainedBucket); n.retained == nil {
		return
	}
	queue := n.openQueue(js, replicas)
	if queue == nil || !n.openRelay(js, replicas) {
		return
	}
	// Watching creates a consumer, which also fails while leaders are
	// being elected (a node restarting as another stops): retried too.
	watch := func(kv jetstream.KeyValue) jetstream.KeyWatcher {
		for delay := 100 * time.Millisecond; ; delay = min(2*delay, time.Second) {
			w, err := kv.WatchAll(n.ctx)
			if err == nil {
				return w
			}
			n.log.Debug("cluster: waiting for jetstream to watch a bucket", "bucket", kv.Bucket(), "err", err)
			select {
			case <-n.ctx.Done():
				return nil
			case <-time.After(delay):
			}
		}
	}
	sw := watch(n.sessions)
	if sw == nil {
		return
	}
	n.wg.Add(1)
	go n.mirrorSessions(sw)
	w := watch(n.retained)
	if w == nil {
		return
	}
	initial := true
	for {
		select {
		case <-n.ctx.Done():
			w.Stop()
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if initial {
					initial = false
					select {
					case <-n.b.Restored():
					case <-n.ctx.Done():
						return
					}
					n.reconcile()
					if err := n.startMirror(queue); err != nil {
						n.log.Error("cluster: queued messages will not be replicated", "err", err)
					}
					n.consumeRelay(n.cfg.Node)
					// Serving needs the lease too: heard by the majority
					// that set up the buckets, a beat or two from now.
					for n.quorumPeers() > 0 && n.lease.mono() >= n.lease.until.Load() {
						select {
						case <-n.ctx.Done():
							return
						case <-time.After(20 * time.Millisecond):
						}
					}
					n.lease.ready.Store(true)
					close(n.ready)
					n.log.Info("cluster ready", "peers", n.cfg.Peers, "replicas", replicas)
				}
				continue
			}
			n.applyRetained(e)
		}
	}
}

// reconcile drops sessions this node restored from its store that another
// node took over while this one was away, and records the rest as ours.
// Then the wills Restore held back are settled: published only for the
// sessions still ours, since the node that took a session over has
// published its will already.
func (n *Node) reconcile() {
	mine := make(map[string]bool)
	for _, id := range n.b.SessionIDs() {
		// Rewritten unchanged at its revision (confirmOwner), not only
		// read: a node still taking this one's sessions over since its
		// loss read the record, and what this node mirrored, before
		// this one came back; its compare-and-set now fails, rather
		// than take the session from under this node, which serves it
		// from now on (its client reconnecting here, messages confirmed
		// here that the taker never read).
		owned, o, err := n.confirmOwner(id)
		if err == nil && !owned && o == "" {
			// No record: created, as this node's.
			ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
			_, err = n.sessions.Create(ctx, key(id), mustJSON(record{Node: n.cfg.Node}))
			cancel()
			if err == nil {
				owned = true
			} else {
				owned, o, err = n.confirmOwner(id)
			}
		}
		switch {
		case owned:
			mine[id] = true
		case err != nil || o == "":
			// Unknown: keep it, as a single node would.
			n.log.Warn("cluster: session owner unknown after restart; keeping the session", "client_id", id, "err", err)
			mine[id] = true
		default:
			n.log.Info("cluster: session moved to another node while this one was down", "client_id", id, "owner", o)
			n.b.DropSession(id)
			// Its removals are not mirrored yet: drop this node's copy
			// in the stream whole (the new owner has its own).
			n.purgeQueued(queueSubject(id, n.cfg.Node), 0)
		}
	}
	n.b.ReleaseWills(func(id string) bool {
		if m, ok := mine[id]; ok && !m {
			return false
		}
		return n.ownForWill(id)
	})
}

// ownForWill decides whether this node publishes a restored will: it does
// if the session's record still names it (or there is none). A node that
// notices this one's loss takes its sessions over by compare-and-set, so
// this one rewrites the record by compare-and-set too: a takeover that
// read the record before fails, and publishes nothing. (One that reads it
// after still succeeds; it needs this node to have rejoined and reconciled
// between the taker's route check and its write, a matter of moments.)
func (n *Node) ownForWill(id string) bool {
	var refused uint64
	for range 3 {
		ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
		e, err := n.readRecord(ctx, id, refused)
		if err == nil {
			var r record
			if json.Unmarshal(e.Value(), &r) == nil && r.Node != n.cfg.Node {
				cancel()
				return false
			}
			_, err = n.sessions.Update(ctx, key(id), e.Value(), e.Revision())
		}
		cancel()
		if !isRevisionMismatch(err) {
			// Written, no record, or the bucket cannot say: a single
			// node would publish it.
			return true
		}
		refused = e.Revision()
	}
	return true
}

// watchPeers notices nodes that left the cluster (lease.go says how).
// The live node with the lowest name takes over what a lost node
// recorded: its clients' wills are published and its persistent sessions'
// subscriptions wait here for their clients, so messages published from
// now on are kept for them.
func (n *Node) watchPeers() {
	defer n.wg.Done()
	declared := make(map[string]bool) // lost nodes, logged once
	lost := make(map[string]bool)     // lost nodes whose sessions are not yet taken over
	tick := time.NewTicker(beatEvery)
	defer tick.Stop()
	var named time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		n.watched.Add(1)
		if time.Since(named) >= time.Second {
			named = time.Now()
			n.learnNames() // Routez: once a second is enough for names
		}
		live := n.livePeers()
		n.notePeers(live)
		n.setLive(live)
		select {
		case <-n.ready:
		default:
			continue
		}
		first := true
		for _, p := range live {
			delete(lost, p) // back before its sessions were taken
			delete(declared, p)
			n.stopRelay(p)
			first = first && n.cfg.Node < p
		}
		if !n.serving() {
			// Cut off, or fenced: the nodes that hold the majority
			// decide who is lost.
			continue
		}
		for _, name := range n.silent() {
			if !declared[name] {
				declared[name] = true
				lost[name] = true
				n.log.Warn("cluster: node lost", "lost", name, "silent_for", deadAfter, "taking_over", first)
			}
		}
		if !first {
			clear(lost) // a lower-named live node takes over
			continue
		}
		for name := range lost {
			// Retried every tick: while the cluster re-elects leaders
			// the buckets may be briefly unavailable.
			if err := n.takeOver(name); err != nil {
				n.log.Debug("cluster: take over lost node's sessions, will retry", "lost", name, "err", err)
				continue
			}
			delete(lost, name)
			// What other nodes relayed to it, for the sessions taken
			// over, is delivered here until it is back.
			n.consumeRelay(name)
		}
	}
}

// mirrorSessions keeps owners in step with the sessions bucket.
func (n *Node) mirrorSessions(w jetstream.KeyWatcher) {
	defer n.wg.Done()
	defer w.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				n.rel.knownOnce.Do(func() { close(n.rel.known) })
				continue
			}
			n.ownersMu.Lock()
			if m, ok := n.owners[e.Key()]; ok && m.rev > e.Revision() {
				// This node's own write, noted ahead of its echo.
				n.ownersMu.Unlock()
				continue
			}
			var r record
			if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &r) == nil {
				n.owners[e.Key()] = mirrored{rev: e.Revision(), rec: r}
				n.indexSession(e.Key(), &r)
			} else {
				delete(n.owners, e.Key())
				n.indexSession(e.Key(), nil)
			}
			n.ownersMu.Unlock()
		}
	}
}

// noteOwner applies this node's own successful write to owners at once,
// ahead of the bucket's echo: a node that has just taken a session
// confirms messages for it (relay.go) without waiting for the echo.
func (n *Node) noteOwner(k string, rev uint64, r record) {
	n.ownersMu.Lock()
	defer n.ownersMu.Unlock()
	if m, ok := n.owners[k]; ok && m.rev >= rev {
		return
	}
	n.owners[k] = mirrored{rev: rev, rec: r}
	n.indexSession(k, &r)
}

// noteMoved points forwarding at the node a session was just handed to,
// ahead of the bucket's echo of that node's claim: from the moment the
// session ends here, messages published here for it are forwarded there
// with confirmation (relay.go). The old revision is kept, so that the
// echo replaces this note.
func (n *Node) noteMoved(clientID, to string, s *broker.SessionSnapshot) {
	if to == "" || to == n.cfg.Node || s == nil {
		return
	}
	k := key(clientID)
	r := record{Node: to, Session: s}
	n.ownersMu.Lock()
	defer n.ownersMu.Unlock()
	if m, ok := n.owners[k]; ok {
		n.owners[k] = mirrored{rev: m.rev, rec: r}
	}
	n.indexSession(k, &r)
}

// takeOverReadHook, set by tests, runs on the node taking a lost node's
// sessions over, once it has read what that node mirrored for a session
// and before its compare-and-set.
var takeOverReadHook atomic.Pointer[func(clientID string)]

// takeOverWaitHook, set by tests, runs on a node where a client claims a
// session that the node is taking over from a lost node at that moment,
// before the claim waits for the takeover.
var takeOverWaitHook atomic.Pointer[func(clientID string)]

// takenOverHook, set by tests, runs on the node taking a lost node's
// sessions over, once the record names it as a session's owner and before
// it installs the session.
var takenOverHook atomic.Pointer[func(clientID string)]

// takeOver claims every session record of a lost node.
func (n *Node) takeOver(lost string) error {
	if n.stopping.Load() {
		// Adopted here, the sessions would only be lost again: a node
		// that stays takes them.
		return errors.New("cluster: node stopping")
	}
	n.ownersMu.Lock()
	todo := make(map[string]mirrored)
	for k, m := range n.owners {
		if m.rec.Node == lost {
			todo[k] = m
		}
	}
	n.ownersMu.Unlock()
	adopted := 0
	for k, m := range todo {
		if n.heardRecently(lost) {
			// Back (woken, or the cut healed): it keeps what it has
			// not lost yet, and re-checks the rest itself.
			n.log.Info("cluster: lost node heard again; takeover stopped", "lost", lost, "sessions", adopted)
			return nil
		}
		r := m.rec
		// The deliveries it mirrored first: while the stream elects a
		// new leader they may be unreadable, and the takeover waits.
		var s *broker.SessionSnapshot
		if r.Session != nil {
			var err error
			if s, err = n.withQueued(r.Session, lost, false); err != nil {
				return err
			}
		}
		if f := takeOverReadHook.Load(); f != nil && s != nil {
			(*f)(s.Session.ClientID)
		}
		keeps := r.Session != nil && r.Session.Session.ExpiryInterval > 0
		if keeps {
			// Before the compare-and-set makes this node the owner, here
			// at once (noteOwner): from then on nothing published here
			// is forwarded to the lost node for the session, and until
			// AdoptOrphan it has no session here to be routed to either.
			// What is published here meanwhile is kept for it
			// (arrive.go), its publishers' acknowledgements waiting.
			n.arriveFor(r.Session.Session.ClientID, snapshotFilters(s), true)
		}
		// Compare-and-set first, so that a will is published once even
		// if two nodes try.
		ctx, cancel := context.WithTimeout(n.ctx, readyWait)
		var err error
		if !keeps {
			err = n.sessions.Delete(ctx, k, jetstream.LastRevision(m.rev))
		} else {
			var rev uint64
			rec := record{Node: n.cfg.Node, Session: r.Session}
			if rev, err = n.sessions.Update(ctx, k, mustJSON(rec), m.rev); err == nil {
				n.noteOwner(k, rev, rec)
			}
		}
		cancel()
		if err != nil {
			if keeps {
				n.arrivedFor(r.Session.Session.ClientID, false, true)
			}
			if isRevisionMismatch(err) {
				continue // changed meanwhile: its client is back somewhere
			}
			return fmt.Errorf("claim session: %w", err)
		}
		if f := takenOverHook.Load(); f != nil && s != nil {
			(*f)(s.Session.ClientID)
		}
		if s != nil {
			id := s.Session.ClientID
			if keeps && !n.b.HasSession(id) {
				// Before the install writes its entries. Not for a
				// session held here already (Adopt leaves it as it
				// is): its entries precede the marker.
				n.markStay(id, arrivingMemory(s))
			}
			n.b.AdoptOrphan(s, false, false)
			if keeps {
				n.arrivedFor(id, n.b.HasSession(id), true)
			}
			adopted++
			n.purgeQueued(queueSubject(id, lost), 0)
		}
	}
	n.log.Info("cluster: took over a lost node's sessions", "lost", lost, "sessions", adopted)
	return nil
}

// Ready is closed once the node's replicated state is available.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Node }

// natsLogger sends the embedded server's log to slog: its notices are
// routine, so they go to debug.
type natsLogger struct {
	l     *slog.Logger
	fatal chan<- string // the first fatal error, for Run
}

func (l natsLogger) Noticef(f string, v ...any) { l.l.Debug("nats: " + fmt.Sprintf(f, v...)) }
func (l natsLogger) Warnf(f string, v ...any)   { l.l.Warn("nats: " + fmt.Sprintf(f, v...)) }
func (l natsLogger) Fatalf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	l.l.Error("nats: " + msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l natsLogger) Errorf(f string, v ...any) {
	if strings.HasPrefix(f, "Error trying to connect to route") {
		// Retried every second while a peer is down; watchPeers reports
		// the loss once.
		l.l.Debug("nats: " + fmt.Sprintf(f, v...))
		return
	}
	l.l.Error("nats: " + fmt.Sprintf(f, v...))
}
func (l natsLogger) Debugf(f string, v ...any) { l.l.Debug("nats: " + fmt.Sprintf(f, v...)) }
func (l natsLogger) Tracef(f string, v ...any) {}

// DefaultNodeName names a node that was given no name: its host name and
// cluster address, unique as long as addresses are.
func DefaultNodeName(listen string) string {
	h, _ := os.Hostname()
	return h + "-" + listen
}

// wake signals a loop's one-slot channel without blocking: a signal already
// pending covers this one.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
