// Package broker is the MQTT broker core: it accepts connections handed to it
// by transports, runs the CONNECT handshake and the per-connection protocol,
// routes publishes to sessions, keeps retained messages and wills, and ends
// sessions on expiry. It knows nothing of listeners or storage formats.
//
// Lock order (docs/broker.md has it whole): Broker.handMu, Broker.mu,
// client.mu, then Broker.msgMu or conn.Conn's own lock; flow control's
// Broker.holdMu and handler.heldMu come before a hold's lock and are never
// held with the others. The retained store's lock is a leaf; the
// subscription index's write lock, taken under client.mu, runs the
// backplane's interest callback, which only queues the change. Nothing is
// published while a client lock is held, because the publisher may be its
// own subscriber.
package broker

import (
	"crypto/rand"
	"encoding/hex"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/conn"
	"github.com/starling-mqtt/starling/internal/limit"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/topic"
)

// Stats are the broker's counters; read them with Load.
type Stats struct {
	Connections      atomic.Int64  // connected clients now
	ConnectionsTotal atomic.Uint64 // accepted CONNECTs since start
	MessagesIn       atomic.Uint64 // PUBLISH received
	MessagesOut      atomic.Uint64 // PUBLISH handed to connections
	Dropped          atomic.Uint64 // deliveries dropped (queue full, expired, too large, slow reader)
	StoreErrors      atomic.Uint64 // failed store commits
	Refused          atomic.Uint64 // connections closed by per-address limits before CONNECT
	// Repeats counts copies of QoS 1/2 messages that reached a session
	// which had taken the message already (in a cluster: relayed or
	// replayed after a fault), not delivered again.
	Repeats atomic.Uint64
	// ConnectedByVersion is Connections split by protocol level (3, 4, 5).
	ConnectedByVersion [6]atomic.Int64
}

func (s *Stats) connected(version byte, n int64) {
	s.Connections.Add(n)
	if int(version) < len(s.ConnectedByVersion) {
		s.ConnectedByVersion[version].Add(n)
	}
}

// Broker routes messages between sessions.
type Broker struct {
	lim   config.Limits
	log   *slog.Logger
	clock Clock // time for deadlines (lifetime.go); real unless SetClock
	// events receives refusals and denials for operators (SetEvents).
	events eventSink

	mu      sync.Mutex
	clients map[string]*client
	// handMu orders routing against sessions leaving for another node
	// (CommitHandOver). Publishes and messages from other nodes hold it
	// for reading while they forward and route; a commit holds it to
	// point forwarding at the session's new node and end the session
	// here. So every message either reaches the session here, and moves
	// with it, or is forwarded to its new node. Taken before mu.
	handMu  sync.RWMutex
	moves   atomic.Uint64           // hand-overs committed, counted under handMu
	conns   map[*conn.Conn]struct{} // every open connection, CONNECT or not
	closing bool
	// clientsCut: Close closed every connection (ClientsCut).
	clientsCut atomic.Bool
	handlers   sync.WaitGroup // connections not yet ended, parked ones too
	idlePoll   bool           // park idle connections (SetIdlePoll)

	subs        *topic.Index[subValue]
	backplane   Backplane
	mirror      Mirror        // the backplane, if it replicates deliveries
	mirrorRev   atomic.Uint64 // last MirrorOp.Rev given; taken under the session's lock
	lastIncarn  uint64        // last client.incarnation given; under mu
	heldWills   []heldWill    // restored wills waiting for the cluster; under mu
	evicted     evictedMemory // what evicted sessions' clients had; under mu
	shareRR     sync.Map      // share group key -> *atomic.Uint64, round robin
	shareGroups atomic.Int64
	retained    *retainStore
	authn       Authenticator
	authz       Authorizer
	// audit bounds the lines about refused clients (CONNECT refusals,
	// $SYS publishes), shared with the authenticator's audit trail.
	audit *limit.Lines
	// connLogs bounds the connect, disconnect and takeover lines (nil:
	// no bound); see connLog.
	connLogs *limit.Lines

	bytes conn.Totals // bytes in and out over all connections
	// connShared is the settings and totals every connection shares.
	connShared conn.Shared
	queued     atomic.Int64 // topic and payload bytes in every session's queue
	flow       flowPolicy
	// holdMu orders readers that stall for room (flow.go): taken before a
	// handler's hold lock.
	holdMu sync.Mutex
	// Flow counts what flow control did.
	Flow     FlowStats
	perAddr  *limit.PerKey    // concurrent connections per source address
	connRate *limit.RateByKey // new connections per second per source address

	store     store.Store // nil: nothing survives a restart
	msgMu     sync.Mutex
	msgRefs   map[uint64]int // stored deliveries per stored message
	lastMsgID uint64

	Stats Stats
	// Traffic holds the detailed counters (by QoS, reason, listener).
	Traffic   Traffic
	obsMu     sync.Mutex
	listeners map[string]*ListenerStats // by listener name; under obsMu
	changes   chan struct{}             // ClientChanges; capacity 1
	restored  chan struct{}             // closed when Restore returns
	topics    topicSampler
	tracer    atomic.Pointer[Trace]

	// sessionQueues are per-session queue bounds (SetQueueLimits), under qlMu.
	qlMu          sync.Mutex
	sessionQueues map[string][2]int
}

// New builds a broker with the given limits.
func New(lim config.Limits, log *slog.Logger) *Broker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	perAddr, connRate := lim.Config.NewConnLimits()
	b := &Broker{
		perAddr:  perAddr,
		connRate: connRate,
		audit:    limit.NewLines(log, defaultAuditRate),
		connLogs: lim.Config.NewConnectionLines(log),
		lim:      lim,
		log:      log,
		clock:    realClock{},
		clients:  make(map[string]*client),
		conns:    make(map[*conn.Conn]struct{}),
		msgRefs:  make(map[uint64]int),
		subs:     topic.NewIndex[subValue](),
		retained: newRetainStore(),
		changes:  make(chan struct{}, 1),
		restored: make(chan struct{}),
		topics:   topicSampler{seed: maphash.MakeSeed()},
	}
	b.connShared = conn.Shared{Totals: &b.bytes, MaxQueuedBytes: lim.MaxQueuedBytes, PacketTimeout: lim.PacketTimeout}
	b.SetFlow(config.Default().SlowConsumer, nil, lim.MaxTotalQueuedBytes)
	return b
}

// defaultAuditRate is the audit lines per second of a broker not given
// its authenticator's limit (SetAuditLines); auth.audit_lines_per_second's
// default.
const defaultAuditRate = 20

// SetAuditLines makes the broker's lines about refused clients share l's
// rate limit (the authenticator's audit trail). Call before serving.
func (b *Broker) SetAuditLines(l *limit.Lines) {
	if l != nil {
		b.audit = l
	}
}

// auditLog writes a line about a refused client within the audit rate
// limit; a line the logger would not write takes nothing from it.
func (b *Broker) auditLog(level slog.Level, msg string, attrs ...slog.Attr) {
	if b.audit.Enabled(level) && b.audit.OK() {
		b.audit.Log(level, msg, attrs...)
	}
}

// client is the broker's view of one client ID: its session and, while
// connected, its connection.
type client struct {
	id string
	// incarnation tells this session apart from another of the same
	// client ID held here before or after (SessionIncarnation); given on
	// first use, under Broker.mu.
	incarnation uint64
	info        atomic.Pointer[ClientInfo] // identity for the authorizer; set on each connect

	mu   sync.Mutex
	sess *session.Session
	conn *conn.Conn // nil while offline
	link linkInfo   // how the last connection came in, for operators
	// closed is the last connection the broker closed on its own (kick,
	// takeover, shutdown) and the reason its handler logs instead of the
	// read error that follows; nil when none is pending.
	closed *closedBy
	will   *willState // will of the current or last connection
	life   *lifetime  // offline: since when, why, the will's and the session's deadlines; nil while online
	// lifeGen tells the current offline life from an earlier one: a timer
	// armed for an older generation (the client came back, was taken
	// over, moved) does nothing.
	lifeGen uint64
	version byte          // protocol level of the last connection
	ended   bool          // session removed; deliveries are ignored
	durable bool          // the session is kept in the store (persistent)
	traffic clientTraffic // messages in and out, for "top clients"
	flow    clientFlow
	sampled *samples // under mu; nil until a sampled delivery (flow.go)
	// gone is why and when the last connection ended, for operators (the
	// client page of the dashboard); nil before the first ends. A pointer:
	// every client record holds this field, few of them need it.
	gone *goneInfo
}

// goneInfo is why and when a client's last connection ended.
type goneInfo struct {
	reason string
	at     time.Time
}

// closeConn closes the client's connection with a v5 DISCONNECT carrying
// code (3.x has no server DISCONNECT: a plain close) and remembers why, for
// the disconnect log line. The caller holds cl.mu and cl.conn is not nil.
func (cl *client) closeConn(code packet.ReasonCode, why string) {
	if cl.version == packet.V5 {
		cl.conn.CloseAfter(&packet.Disconnect{ReasonCode: code})
	} else {
		cl.conn.CloseAfter(nil)
	}
	cl.closed = &closedBy{conn: cl.conn, why: why}
}

// closedBy is a connection the broker closed on its own, and why.
type closedBy struct {
	conn *conn.Conn
	why  string
}

// closedReason is why the broker closed c, "" if it did not. The caller
// holds cl.mu.
func (cl *client) closedReason(c *conn.Conn) string {
	if cl.closed != nil && cl.closed.conn == c {
		return cl.closed.why
	}
	return ""
}

// HandleConn runs one connection. Transports call it in a goroutine per
// accepted connection. It returns when the connection has ended or, with
// SetIdlePoll on, earlier, once the connection waits idle for input
// (parked: goroutines started by the poller carry on with it). Close waits
// for both kinds.
func (b *Broker) HandleConn(nc net.Conn) { b.serveConn(nc, "", nil) }

// SetIdlePoll lets idle connections wait for input without a goroutine
// (internal/poll; plain TCP and WebSocket over plain TCP on Linux). Set it
// before serving connections.
func (b *Broker) SetIdlePoll(on bool) { b.idlePoll = on }

// serveConn runs a connection accepted by the named listener ("" when
// unknown); the Authenticator sees the name in ConnectInfo.Listener. ls,
// when not nil, has counted the connection open: it is counted closed when
// the connection ends.
func (b *Broker) serveConn(nc net.Conn, listener string, ls *ListenerStats) {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		nc.Close()
		ls.closed()
		return
	}
	b.handlers.Add(1)
	b.mu.Unlock()
	h := &handler{b: b, listener: listener, ls: ls}
	if key, limited := addrKey(nc.RemoteAddr()); limited {
		// Checked before anything is read or allocated for the connection.
		lim := -1
		if !b.connRate.Allow(key) {
			lim = limConnRate
		} else if !b.perAddr.Acquire(key) {
			lim = limConnPerAddress
		}
		if lim >= 0 {
			b.Stats.Refused.Add(1)
			b.exceeded(lim)
			b.log.Debug("connection refused by per-address limit", "remote", nc.RemoteAddr().String(), "limit", LimitNames[lim])
			nc.Close()
			h.release()
			return
		}
		h.addrKey = key
	}
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		nc.Close()
		h.release()
		return
	}
	c := conn.New(nc, b.lim.MaxPacketSize)
	c.SetShared(&b.connShared)
	c.SetOwner(h)
	b.conns[c] = struct{}{}
	b.mu.Unlock()
	h.c = c
	h.drive(h.run)
}

// drive runs part of a connection's life on the calling goroutine: the
// whole of it (run), or what follows a park (resume). Unless fn parked the
// connection again, it then waits for the socket to close and releases
// what the connection held.
func (h *handler) drive(fn func() (parked bool)) {
	parked := false
	func() {
		defer func() {
			// A bug triggered by one client ends that connection only.
			if r := recover(); r != nil {
				h.b.log.Error("connection handler panic", "remote", h.remoteAddr(), "panic", r, "stack", string(debug.Stack()))
				h.c.Close()
				if h.cl != nil {
					h.b.detach(h)
				}
				parked = false
			}
		}()
		parked = fn()
	}()
	if parked {
		return
	}
	<-h.c.Done()
	h.b.mu.Lock()
	delete(h.b.conns, h.c)
	h.b.mu.Unlock()
	h.release()
}

// release gives back the per-address slot and the listener count and lets
// Close stop waiting for this connection.
func (h *handler) release() {
	if h.addrKey != "" {
		h.b.perAddr.Release(h.addrKey)
	}
	h.b.handlers.Done()
	h.ls.closed()
}

// Close disconnects every client: MQTT 5 clients get DISCONNECT 0x8B, others
// a closed connection. It waits for handlers up to timeout.
func (b *Broker) Close(timeout time.Duration) {
	b.mu.Lock()
	b.closing = true
	var conns []*conn.Conn
	attached := make(map[*conn.Conn]bool)
	for _, cl := range b.clients {
		cl.mu.Lock()
		if cl.conn != nil {
			attached[cl.conn] = true
			cl.closeConn(packet.ServerShuttingDown, "server shutting down")
		}
		b.stopLife(cl)
		cl.mu.Unlock()
	}
	for c := range b.conns {
		conns = append(conns, c)
		if !attached[c] {
			c.Close() // still in the CONNECT handshake
		}
	}
	b.mu.Unlock()
	done := make(chan struct{})
	go func() { b.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		for _, c := range conns {
			c.Close()
		}
		// Nothing a handler still sends reaches a client now: a wait
		// that holds back an acknowledgement may give up (ClientsCut).
		b.clientsCut.Store(true)
		<-done
	}
}

// ClientsCut reports whether Close has closed every connection after its
// timeout, so that nothing sent from now on reaches a client: what holds
// a handler back until it is safe to acknowledge (a cluster node fenced
// from the others) may stop waiting.
func (b *Broker) ClientsCut() bool { return b.clientsCut.Load() }

// BytesReceived returns the bytes of MQTT packets read from clients.
func (b *Broker) BytesReceived() uint64 { return b.bytes.BytesIn.Load() }

// BytesSent returns the bytes written to clients.
func (b *Broker) BytesSent() uint64 { return b.bytes.BytesOut.Load() }

// Sessions returns the number of sessions, connected or not.
func (b *Broker) Sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.clients)
}

// Retained returns the number of retained messages.
func (b *Broker) Retained() int { return b.retained.len() }

// addrKey is the per-address limit key of a remote address; loopback
// clients (local tools, a reverse proxy without PROXY protocol) are not
// limited per address.
func addrKey(a net.Addr) (string, bool) {
	var ip netip.Addr
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(ta.IP)
	} else if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	if !ip.IsValid() || ip.Unmap().IsLoopback() {
		return "", false // no IP (pipes, tests) or local
	}
	return limit.AddrKey(a), true
}

func newClientID() string {
	var r [12]byte
	rand.Read(r[:])
	return "auto-" + hex.EncodeToString(r[:])
}

func (b *Broker) sessionLimits() session.Limits {
	return session.Limits{MaxQueued: b.lim.MaxQueued, MaxQueuedBytes: b.lim.MaxQueuedBytes, MaxInflight: b.lim.MaxInflight, ReceiveMax: b.lim.MaxInflight, Total: &b.queued}
}

// subValue is what the subscription index holds per subscription.
type subValue struct {
	cl     *client
	opts   packet.Subscription
	id     int           // subscription identifier
	latest bool          // latest-value delivery (conflation)
	sample time.Duration // sampled delivery: at most one per topic per this (QoS 0)
}
