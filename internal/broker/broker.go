// Package broker is the MQTT broker core: it accepts connections handed to it
// by transports, runs the CONNECT handshake and the per-connection protocol,
// routes publishes to sessions, keeps retained messages and wills, and ends
// sessions on expiry. It knows nothing of listeners or storage formats.
//
// Lock order: Broker.mu, then client.mu, then conn.Conn's own lock. The
// subscription index and the retained store have their own locks and are
// never held while taking another. Nothing is published while a client lock
// is held, because the publisher may be its own subscriber.
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
	lim config.Limits
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	clients  map[string]*client
	conns    map[*conn.Conn]struct{} // every open connection, CONNECT or not
	closing  bool
	handlers sync.WaitGroup

	subs        *topic.Index[subValue]
	backplane   Backplane
	heldWills   []heldWill // restored wills waiting for the cluster; under mu
	shareRR     sync.Map   // share group key -> *atomic.Uint64, round robin
	shareGroups atomic.Int64
	retained    *retainStore
	authn       Authenticator
	authz       Authorizer

	bytes    conn.Totals      // bytes in and out over all connections
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
}

// New builds a broker with the given limits.
func New(lim config.Limits, log *slog.Logger) *Broker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	perAddr, connRate := lim.Config.NewConnLimits()
	return &Broker{
		perAddr:  perAddr,
		connRate: connRate,
		lim:      lim,
		log:      log,
		now:      time.Now,
		clients:  make(map[string]*client),
		conns:    make(map[*conn.Conn]struct{}),
		msgRefs:  make(map[uint64]int),
		subs:     topic.NewIndex[subValue](),
		retained: newRetainStore(),
		changes:  make(chan struct{}, 1),
		restored: make(chan struct{}),
		topics:   topicSampler{seed: maphash.MakeSeed()},
	}
}

// client is the broker's view of one client ID: its session and, while
// connected, its connection.
type client struct {
	id   string
	info atomic.Pointer[ClientInfo] // identity for the authorizer; set on each connect

	mu      sync.Mutex
	sess    *session.Session
	conn    *conn.Conn // nil while offline
	version byte       // protocol level of the last connection
	will    *willState // will of the current or last connection
	expiry  *time.Timer
	ended   bool // session removed; deliveries are ignored
	tx      *tx  // the operation whose batch journals session changes
	// disconnectedAt is when the last connection ended (persisted: expiry
	// and will delay count from it across restarts).
	disconnectedAt time.Time
	takeoverGen    uint64
	traffic        clientTraffic // messages in and out, for "top clients"
}

// HandleConn runs one connection to its end. Transports call it in a
// goroutine per accepted connection.
func (b *Broker) HandleConn(nc net.Conn) { b.serveConn(nc, "") }

// serveConn runs a connection accepted by the named listener ("" when
// unknown); the Authenticator sees the name in ConnectInfo.Listener.
func (b *Broker) serveConn(nc net.Conn, listener string) {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		nc.Close()
		return
	}
	b.handlers.Add(1)
	b.mu.Unlock()
	defer b.handlers.Done()
	if key, limited := addrKey(nc.RemoteAddr()); limited {
		// Checked before anything is read or allocated for the connection.
		if !b.connRate.Allow(key) || !b.perAddr.Acquire(key) {
			b.Stats.Refused.Add(1)
			b.log.Debug("connection refused by per-address limit", "remote", nc.RemoteAddr().String())
			nc.Close()
			return
		}
		defer b.perAddr.Release(key)
	}
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		nc.Close()
		return
	}
	c := conn.New(nc, b.lim.MaxPacketSize)
	c.Totals = &b.bytes
	c.MaxQueuedBytes = b.lim.MaxQueuedBytes
	b.conns[c] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
	}()
	h := &handler{b: b, c: c, remote: nc.RemoteAddr().String(), listener: listener}
	func() {
		defer func() {
			// A bug triggered by one client ends that connection only.
			if r := recover(); r != nil {
				b.log.Error("connection handler panic", "remote", h.remote, "panic", r, "stack", string(debug.Stack()))
				c.Close()
				if h.cl != nil {
					b.detach(h)
				}
			}
		}()
		h.run()
	}()
	<-c.Done()
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
			if cl.version == packet.V5 {
				cl.conn.CloseAfter(&packet.Disconnect{ReasonCode: packet.ServerShuttingDown})
			} else {
				cl.conn.CloseAfter(nil)
			}
		}
		if cl.expiry != nil {
			cl.expiry.Stop()
		}
		if cl.will != nil && cl.will.timer != nil {
			cl.will.timer.Stop()
		}
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
		<-done
	}
}

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
	return session.Limits{MaxQueued: b.lim.MaxQueued, MaxQueuedBytes: b.lim.MaxQueuedBytes, MaxInflight: b.lim.MaxInflight, ReceiveMax: b.lim.MaxInflight}
}

// subValue is what the subscription index holds per subscription.
type subValue struct {
	cl   *client
	opts packet.Subscription
	id   int // subscription identifier
}
