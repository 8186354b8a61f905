// Package bridge connects the broker to remote MQTT brokers (edge to
// cloud). Each bridge has two MQTT clients, not hand-written ones:
//
//   - the local side (paho.golang): a persistent session of this broker,
//     reached over net.Pipe (broker.HandleInternalConn). Its queue of QoS
//     1/2 messages is the broker's own durable session queue, so what goes
//     out survives a link cut and a crash of the broker. It acknowledges a
//     message only once the remote has acknowledged it (PUBACK, PUBCOMP);
//   - the remote side: an autopaho connection manager for MQTT 5
//     (reconnects with back-off and jitter, keeps its session with clean
//     start false) or paho.mqtt.golang for 3.1.1 (v3.go). It acknowledges
//     an incoming message only once this broker has acknowledged it to the
//     local side, that is stored and routed it.
//
// The local side stays connected while the link is down: its session
// queues in the store within the bridge's bounds (SetQueueLimits), and
// local publishers are held back only once that queue is full, as for any
// subscriber (docs/flow-control.md). A publish in flight to the remote
// waits in the remote session across reconnections, so QoS 2 stays exactly
// once across a link cut.
package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/topic"
)

// Defaults of the zero values of config.Bridge.
const (
	DefaultKeepAlive      = 60 * time.Second
	DefaultSessionExpiry  = 24 * time.Hour
	DefaultMaxInflight    = 32
	DefaultMaxQueued      = 100000
	DefaultMaxQueuedBytes = 64 << 20
	DefaultReconnectMin   = time.Second
	DefaultReconnectMax   = time.Minute
)

// localWindow is the Receive Maximum of the local side: how many QoS 1/2
// messages the broker hands the bridge before their acknowledgements,
// which wait for the remote's. More than max_inflight so that topics that
// take different lanes keep the link busy.
const localWindow = 256

// ackInterval is how often paho sends the acknowledgements the bridge has
// released (in order); its 50 ms default would cap a window of 32 at 640
// messages per second.
const ackInterval = 2 * time.Millisecond

// LocalClientID is the client ID of bridge name's session in this broker.
func LocalClientID(name string) string { return broker.InternalClientPrefix + "bridge/" + name }

// Status is what operators see of one bridge.
type Status struct {
	Name      string    `json:"name"`
	Remote    string    `json:"remote"`
	Connected bool      `json:"connected"`
	Queued    int       `json:"queued"`   // QoS 1/2 messages waiting to go out, in flight included
	Sent      uint64    `json:"sent"`     // messages the remote acknowledged (QoS 0: sent)
	Received  uint64    `json:"received"` // messages from the remote routed here
	Dropped   uint64    `json:"dropped"`  // messages lost: queue bounds, remote refusals, QoS 0 on a down or full link
	Connects  uint64    `json:"connects"` // successful remote connections
	LastError string    `json:"last_error,omitempty"`
	ErrorAt   time.Time `json:"last_error_at,omitzero"`
}

// Bridge is one running bridge.
type Bridge struct {
	cfg     config.Bridge
	localID string
	b       *broker.Broker
	log     *slog.Logger
	rules   []rule

	sent, received, dropped, connects atomic.Uint64
	connected                         atomic.Bool
	closing                           atomic.Bool  // Close began: no new publish starts
	inflight                          atomic.Int32 // publishes waiting for the remote
	onChange                          func()       // after connected changes; may be nil

	mu      sync.Mutex
	lastErr string
	errAt   time.Time
	cm      *autopaho.ConnectionManager // nil until started
	up      chan struct{}               // closed while the remote is up
	// epoch ends when the remote loses our session: publishes waiting
	// for an acknowledgement in it are sent again.
	epoch       context.Context
	epochCancel context.CancelFunc
	local       *localConn    // nil while the local side is down
	localUp     chan struct{} // closed when local is set

	// publish sends a message to the remote and waits for its
	// acknowledgement (publishV5 or the 3.1.1 client's).
	publish func(ctx context.Context, out *paho.Publish) (refused bool, err error)
	// closeRemote disconnects a 3.1.1 remote; nil for MQTT 5.
	closeRemote func()

	lanes  []chan outItem
	ctx    context.Context // the bridge's life, from Start
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// rule is a topic rule with its filters ready.
type rule struct {
	config.BridgeTopic
	out, in      bool
	localFilter  string
	remoteFilter string
}

// localConn is one connection of the local side.
type localConn struct {
	cli *paho.Client
	ctx context.Context // ends with the connection or the bridge
}

// outItem is a message on its way out.
type outItem struct {
	lc  *localConn
	pb  *paho.Publish // as received from the local broker
	out *paho.Publish // as it goes to the remote
}

// New builds a bridge on broker b; Start runs it.
func New(cfg config.Bridge, b *broker.Broker, log *slog.Logger) *Bridge {
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.SessionExpiry == 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.MaxQueued == 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.MaxQueuedBytes == 0 {
		cfg.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin = DefaultReconnectMin
	}
	if cfg.ReconnectMax == 0 {
		cfg.ReconnectMax = max(DefaultReconnectMax, cfg.ReconnectMin)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "starling-bridge-" + cfg.Name
	}
	br := &Bridge{cfg: cfg, localID: LocalClientID(cfg.Name), b: b, log: log.With("bridge", cfg.Name),
		up: make(chan struct{}), localUp: make(chan struct{})}
	br.epoch, br.epochCancel = context.WithCancel(context.Background())
	for _, t := range cfg.Topics {
		br.rules = append(br.rules, rule{BridgeTopic: t, out: t.Direction != "in", in: t.Direction != "out",
			localFilter: t.LocalPrefix + t.Filter, remoteFilter: t.RemotePrefix + t.Filter})
	}
	// The local session keeps what waits for the link, within the
	// bridge's own bounds rather than those of ordinary clients.
	b.SetQueueLimits(br.localID, cfg.MaxQueued, cfg.MaxQueuedBytes)
	return br
}

// Name is the bridge's name.
func (br *Bridge) Name() string { return br.cfg.Name }

// Start connects the bridge; it keeps reconnecting until Close.
func (br *Bridge) Start() error {
	u, err := url.Parse(br.cfg.Remote)
	if err != nil {
		return fmt.Errorf("bridge %s: remote: %w", br.cfg.Name, err)
	}
	tlsCfg, err := br.tlsConfig(u)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", br.cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	br.cancel, br.ctx = cancel, ctx
	br.lanes = make([]chan outItem, br.cfg.MaxInflight)
	for i := range br.lanes {
		// Room for the whole local window: the broker never has more
		// QoS 1/2 messages in flight to us than localWindow, so a lane
		// never blocks the local reader for those.
		br.lanes[i] = make(chan outItem, localWindow+16)
		br.done.Add(1)
		go br.lane(ctx, br.lanes[i])
	}
	if br.cfg.Protocol == "3.1.1" {
		br.startV3(u, tlsCfg)
		br.done.Add(1)
		go br.run(ctx)
		return nil
	}
	br.publish = br.publishV5
	expiry := uint32(min(br.cfg.SessionExpiry/time.Second, 0xFFFFFFFF))
	recvMax := br.cfg.MaxInflight
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     uint16(br.cfg.KeepAlive / time.Second),
		CleanStartOnInitialConnection: br.cfg.CleanStart,
		SessionExpiryInterval:         expiry,
		ReconnectBackoff:              Backoff(br.cfg.ReconnectMin, br.cfg.ReconnectMax),
		ConnectTimeout:                10 * time.Second,
		ConnectUsername:               br.cfg.Username,
		ConnectPassword:               []byte(br.cfg.Password),
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			// Flow control toward us: the remote sends at most this many
			// unacknowledged messages, and we acknowledge each once it is
			// stored here, so a slow local side slows the remote.
			cp.Properties.ReceiveMaximum = &recvMax
			return cp, nil
		},
		OnConnectionUp:   br.remoteUp,
		OnConnectionDown: func() bool { br.remoteDown(); return true },
		OnConnectError:   func(err error) { br.fail("connect", err) },
		ClientConfig: paho.ClientConfig{
			ClientID:                   br.cfg.ClientID,
			EnableManualAcknowledgment: true,
			// A publish waits for its acknowledgement across reconnections
			// (the session keeps it); ctx and the epoch end the wait.
			PacketTimeout:     100 * 365 * 24 * time.Hour,
			SendAcksInterval:  ackInterval,
			Session:           state.NewInMemory(),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){br.fromRemote},
			OnClientError:     func(err error) { br.fail("remote", err) },
			OnServerDisconnect: func(d *paho.Disconnect) {
				br.fail("remote", fmt.Errorf("disconnected by the remote: reason 0x%02x %s", d.ReasonCode, reasonString(d)))
			},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cc)
	if err != nil {
		cancel()
		return fmt.Errorf("bridge %s: %w", br.cfg.Name, err)
	}
	br.mu.Lock()
	br.cm = cm
	br.mu.Unlock()
	br.done.Add(1)
	go br.run(ctx)
	return nil
}

func reasonString(d *paho.Disconnect) string {
	if d.Properties != nil {
		return d.Properties.ReasonString
	}
	return ""
}

// Close stops the bridge: both sides are disconnected, sessions kept.
func (br *Bridge) Close() {
	if br.cancel == nil {
		return
	}
	// Let the publishes in flight finish and their acknowledgements reach
	// the local session (paho sends them every ackInterval), so that a
	// clean shutdown sends nothing twice after the restart. Bounded: a
	// remote that does not answer is not waited for.
	br.closing.Store(true)
	for deadline := time.Now().Add(2 * time.Second); br.inflight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(3 * ackInterval)
	br.cancel()
	if br.closeRemote != nil {
		br.closeRemote()
	}
	br.mu.Lock()
	cm := br.cm
	br.mu.Unlock()
	if cm != nil {
		<-cm.Done()
	}
	br.done.Wait()
}

// tlsConfig is the TLS configuration for mqtts and wss: the CA to trust
// and the client certificate.
func (br *Bridge) tlsConfig(u *url.URL) (*tls.Config, error) {
	if u.Scheme != "mqtts" && u.Scheme != "wss" {
		return nil, nil
	}
	c := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	if br.cfg.CAFile != "" {
		pem, err := os.ReadFile(br.cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate", br.cfg.CAFile)
		}
	}
	if br.cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(br.cfg.CertFile, br.cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file, key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Backoff is exponential back-off from lo to hi with full jitter in the
// upper half: attempt n waits between d/2 and d, d = min(hi, lo*2^n), so
// that bridges cut together do not reconnect together.
func Backoff(lo, hi time.Duration) func(int) time.Duration {
	return func(n int) time.Duration {
		d := lo
		for i := 0; i < n && d < hi; i++ {
			d *= 2
		}
		d = min(d, hi)
		return d/2 + rand.N(d/2+1)
	}
}

// fail records err as the bridge's last error.
func (br *Bridge) fail(what string, err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	br.mu.Lock()
	br.lastErr, br.errAt = what+": "+err.Error(), time.Now()
	br.mu.Unlock()
	br.log.Warn("bridge link error", "err", err, "side", what)
}

// Status returns the bridge's state.
func (br *Bridge) Status() Status {
	s := Status{Name: br.cfg.Name, Remote: redact(br.cfg.Remote), Connected: br.connected.Load(),
		Sent: br.sent.Load(), Received: br.received.Load(), Dropped: br.dropped.Load(), Connects: br.connects.Load()}
	if cs, ok := br.b.Client(br.localID); ok {
		s.Queued = cs.Queued + cs.Inflight
		s.Dropped += cs.DroppedQueue + cs.DroppedExpired + cs.DroppedLarge
	}
	br.mu.Lock()
	s.LastError, s.ErrorAt = br.lastErr, br.errAt
	br.mu.Unlock()
	return s
}

// redact drops a password written in the URL.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}

// remoteUp runs when the remote connection is made: it subscribes to the
// in rules and lets the lanes send. It must not block.
func (br *Bridge) remoteUp(cm *autopaho.ConnectionManager, ca *paho.Connack) {
	br.connects.Add(1)
	br.connected.Store(true)
	br.log.Info("bridge connected", "remote", redact(br.cfg.Remote), "session_present", ca.SessionPresent)
	var subs []paho.SubscribeOptions
	for _, r := range br.rules {
		if r.in {
			// No local: what we publish there for an out rule must not come
			// back to us (a "both" rule would loop). Retained messages are
			// sent on a new subscription only.
			subs = append(subs, paho.SubscribeOptions{Topic: r.remoteFilter, QoS: r.QoS, NoLocal: true, RetainAsPublished: true, RetainHandling: 1})
		}
	}
	br.mu.Lock()
	if !ca.SessionPresent && br.epochCancel != nil {
		// The remote has no session for us: paho forgets the messages in
		// flight without answering their publishers, so they are sent
		// again from here.
		br.epochCancel()
		br.epoch, br.epochCancel = context.WithCancel(context.Background())
	}
	close(br.up)
	br.mu.Unlock()
	br.changed()
	if len(subs) > 0 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
				br.fail("remote subscribe", err)
			}
		}()
	}
}

// remoteDown runs when the remote connection is lost. Messages in flight
// stay in the remote session (clean start false): paho sends them again on
// the next connection and their publishers wait until then.
func (br *Bridge) remoteDown() {
	br.connected.Store(false)
	br.log.Info("bridge disconnected", "remote", redact(br.cfg.Remote))
	br.mu.Lock()
	br.up = make(chan struct{})
	br.mu.Unlock()
	br.changed()
}

// changed tells the Set that the bridge's link changed.
func (br *Bridge) changed() {
	if br.onChange != nil {
		br.onChange()
	}
}

// run keeps the local side connected. It stays connected while the link is
// down: its session queues within the bridge's bounds (in the store, as
// any persistent session's), and local publishers are held back only once
// that queue is full.
func (br *Bridge) run(ctx context.Context) {
	defer br.done.Done()
	attempt := 0
	for ctx.Err() == nil {
		lctx, lcancel := context.WithCancel(ctx)
		lc, err := br.connectLocal(lctx)
		if err != nil {
			lcancel()
			br.fail("local", err)
			attempt++
			select {
			case <-ctx.Done():
				return
			case <-time.After(Backoff(100*time.Millisecond, 5*time.Second)(attempt)):
			}
			continue
		}
		attempt = 0
		select {
		case <-ctx.Done():
		case <-lc.cli.Done():
			br.fail("local", errors.New("local connection ended"))
		}
		// Messages handed out on this connection and not yet acknowledged
		// stay in flight in the session: the broker sends them again on
		// the next connection.
		br.mu.Lock()
		br.local = nil
		br.localUp = make(chan struct{})
		br.mu.Unlock()
		lcancel()
		_ = lc.cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-lc.cli.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// connectLocal connects the local side and subscribes it to the out rules.
func (br *Bridge) connectLocal(ctx context.Context) (*localConn, error) {
	c1, c2 := net.Pipe()
	go br.b.HandleInternalConn(c2)
	lc := &localConn{ctx: ctx}
	cli := paho.NewClient(paho.ClientConfig{
		ClientID:                   br.localID,
		Conn:                       packets.NewThreadSafeConn(c1),
		EnableManualAcknowledgment: true,
		SendAcksInterval:           ackInterval,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			br.fromLocal(lc, pr.Packet)
			return true, nil
		}},
		OnClientError: func(err error) {
			if ctx.Err() == nil { // not our own disconnect
				br.fail("local", err)
			}
		},
	})
	lc.cli = cli
	never := uint32(0xFFFFFFFF)
	recvMax := uint16(localWindow)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cli.Connect(cctx, &paho.Connect{ClientID: br.localID, CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &never, ReceiveMaximum: &recvMax}}); err != nil {
		c1.Close()
		return nil, fmt.Errorf("connect local session: %w", err)
	}
	var subs []paho.SubscribeOptions
	for _, r := range br.rules {
		if r.out {
			// No local: what this bridge brings in must not go back out.
			subs = append(subs, paho.SubscribeOptions{Topic: r.localFilter, QoS: r.QoS, NoLocal: true, RetainAsPublished: true, RetainHandling: 1})
		}
	}
	if len(subs) > 0 {
		if _, err := cli.Subscribe(cctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			_ = cli.Disconnect(&paho.Disconnect{})
			return nil, fmt.Errorf("subscribe local session: %w", err)
		}
	}
	br.mu.Lock()
	br.local = lc
	close(br.localUp)
	br.mu.Unlock()
	return lc, nil
}

// fromLocal takes a message of the local session and hands it to its lane.
func (br *Bridge) fromLocal(lc *localConn, pb *paho.Publish) {
	r, rest, ok := br.match(pb.Topic, true)
	if !ok {
		// No rule: it cannot be forwarded; acknowledge so it is not
		// redelivered forever.
		br.dropped.Add(1)
		_ = lc.cli.Ack(pb)
		return
	}
	out := &paho.Publish{QoS: min(pb.QoS, r.QoS), Retain: pb.Retain, Topic: r.RemotePrefix + rest, Payload: pb.Payload, Properties: copyProps(pb.Properties)}
	lane := br.lanes[laneOf(out.Topic, len(br.lanes))]
	it := outItem{lc: lc, pb: pb, out: out}
	if pb.QoS == 0 {
		select {
		case lane <- it:
		default:
			br.dropped.Add(1) // QoS 0 is not held for a slow link
		}
		return
	}
	select {
	case lane <- it:
	case <-lc.ctx.Done():
	}
}

// lane forwards its messages in order: messages of one topic always take
// the same lane, so their order holds while lanes run side by side.
func (br *Bridge) lane(ctx context.Context, in chan outItem) {
	defer br.done.Done()
	for {
		var it outItem
		select {
		case <-ctx.Done():
			return
		case it = <-in:
		}
		br.forward(ctx, it)
	}
}

// forward publishes one message to the remote and, once it is
// acknowledged there, acknowledges it to the local session. ctx is the
// bridge's life.
func (br *Bridge) forward(ctx context.Context, it outItem) {
	for attempt := 1; ; attempt++ {
		if it.lc.ctx.Err() != nil {
			return // the broker sends it again on the next local connection
		}
		br.mu.Lock()
		up := br.up
		br.mu.Unlock()
		if it.out.QoS > 0 {
			select {
			case <-up:
			case <-ctx.Done():
				return
			case <-it.lc.ctx.Done():
				return
			}
		}
		if br.closing.Load() {
			return // not sent: the broker hands it out again after the restart
		}
		br.inflight.Add(1)
		refused, err := br.publish(ctx, it.out)
		br.inflight.Add(-1)
		if err == nil || refused {
			if err != nil {
				// Refused by the remote (not authorized, quota...): sending
				// again would be refused again.
				br.dropped.Add(1)
				br.fail("remote refused publish", err)
			} else {
				br.sent.Add(1)
			}
			if it.pb.QoS > 0 && it.lc.ctx.Err() == nil {
				_ = it.lc.cli.Ack(it.pb)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		if it.out.QoS == 0 {
			br.dropped.Add(1) // the link is down: QoS 0 is not queued
			return
		}
		if !errors.Is(err, context.Canceled) && !errors.Is(err, autopaho.ConnectionDownError) {
			br.fail("publish", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(Backoff(10*time.Millisecond, time.Second)(attempt)):
		}
	}
}

// publishV5 publishes out on the MQTT 5 remote and waits for its
// acknowledgement; refused is set when the remote answered with an error
// reason code.
func (br *Bridge) publishV5(ctx context.Context, out *paho.Publish) (refused bool, err error) {
	// The epoch is read once the link is up: the connection that brought
	// it up may have begun a new one.
	br.mu.Lock()
	cm, epoch := br.cm, br.epoch
	br.mu.Unlock()
	pctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(epoch, cancel)
	resp, err := cm.Publish(pctx, out)
	stop()
	cancel()
	return err != nil && resp != nil && resp.ReasonCode >= 0x80, err
}

// fromRemote routes a message from the MQTT 5 remote here, then
// acknowledges it.
func (br *Bridge) fromRemote(pr paho.PublishReceived) (bool, error) {
	pb := pr.Packet
	if br.routeIn(pb.Topic, pb.QoS, pb.Retain, pb.Payload, copyProps(pb.Properties), pr.Client.Done()) {
		return true, pr.Client.Ack(pb)
	}
	return true, nil
}

// routeIn publishes a message that came from the remote on topic name
// here, through the local side. It reports whether the message may be
// acknowledged to the remote: stored and routed here, or not to be retried
// (no rule matches, refused here). gone ends the wait when the remote
// connection is lost: the remote sends the message again.
func (br *Bridge) routeIn(name string, qos byte, retain bool, payload []byte, props *paho.PublishProperties, gone <-chan struct{}) bool {
	r, rest, ok := br.match(name, false)
	if !ok {
		br.dropped.Add(1)
		return true
	}
	for br.ctx.Err() == nil {
		br.mu.Lock()
		lc, wait := br.local, br.localUp
		br.mu.Unlock()
		if lc == nil {
			select {
			case <-wait:
				continue
			case <-gone:
				return false
			case <-br.ctx.Done():
				return false
			}
		}
		in := &paho.Publish{QoS: min(qos, r.QoS), Retain: retain, Topic: r.LocalPrefix + rest, Payload: payload, Properties: props}
		resp, err := lc.cli.Publish(lc.ctx, in)
		if err != nil && (resp == nil || resp.ReasonCode < 0x80) {
			// The local connection failed (rare: the broker ended it); run
			// connects it again. Not acknowledging would hold back the
			// acknowledgements after this one (they go in order) until the
			// remote reconnects, so try again here.
			if lc.ctx.Err() == nil {
				br.fail("local publish", err)
			}
			select {
			case <-gone:
				return false
			case <-br.ctx.Done():
				return false
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			br.dropped.Add(1) // refused here (e.g. too large): not retried
			br.fail("local publish refused", err)
		} else {
			br.received.Add(1)
		}
		return true
	}
	return false
}

// match finds the first rule of the direction whose filter matches name
// (local topic for out, remote topic for in) and returns the topic without
// that side's prefix.
func (br *Bridge) match(name string, out bool) (rule, string, bool) {
	for _, r := range br.rules {
		if out && r.out && topic.Match(r.localFilter, name) && len(name) >= len(r.LocalPrefix) {
			return r, name[len(r.LocalPrefix):], true
		}
		if !out && r.in && topic.Match(r.remoteFilter, name) && len(name) >= len(r.RemotePrefix) {
			return r, name[len(r.RemotePrefix):], true
		}
	}
	return rule{}, "", false
}

// copyProps keeps the application's properties of a message; the
// subscription identifier and topic alias belong to one connection.
func copyProps(p *paho.PublishProperties) *paho.PublishProperties {
	if p == nil {
		return nil
	}
	return &paho.PublishProperties{CorrelationData: p.CorrelationData, ContentType: p.ContentType, ResponseTopic: p.ResponseTopic,
		PayloadFormat: p.PayloadFormat, MessageExpiry: p.MessageExpiry, User: p.User}
}

// laneOf spreads topics over n lanes (FNV-1a).
func laneOf(s string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}
