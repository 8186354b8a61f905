package broker

import (
	"errors"
	"slices"
	"time"

	"github.com/starling-mqtt/starling/internal/conn"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/topic"
)

// Backplane joins broker nodes into one cluster. A single-node broker has
// none. Everything the broker calls must return quickly: network work is
// the backplane's to queue. Messages from peers come back through Inject,
// InjectShared and ApplyRetained.
type Backplane interface {
	// Forward hands a message published on this node to the nodes that
	// subscribe to it; remote reports whether any other node might. For a
	// message other nodes must keep for persistent sessions, safe is
	// closed once they have it (or it was given up on, logged); the
	// publisher's acknowledgement waits for it. Nil: nothing to wait for.
	Forward(m *session.Message) (remote bool, safe <-chan struct{})
	// Interest is told when this node gains its first or loses its last
	// subscription on (group, filter); group is "" for normal ones. It is
	// called under the subscription index's lock and must not block.
	Interest(group, filter string, on bool)
	// Retain replicates a retained message (an empty payload deletes).
	Retain(m *session.Message)
	// Claim makes this node the owner of clientID's session before a
	// connection attaches to it. A node that held it lets it go, closing
	// its connection, and hands back its state unless clean is set. An
	// error wrapping ErrSessionMoving or ErrNotReady refuses the connect;
	// any other lets it go ahead on this node's state.
	Claim(clientID string, clean bool) (*SessionSnapshot, error)
	// SessionChanged records a persistent session's subscriptions so a
	// node can recover them if this one is lost; SessionEnded forgets the
	// session. Both may be called under broker locks and must not block.
	SessionChanged(s *SessionSnapshot)
	SessionEnded(clientID string)
}

// StayMarker is implemented by a backplane that mirrors persistent
// sessions' deliveries to a stream subject per session and node (docs/cluster.md,
// Queued messages). StartStay is called before a connection starts a new
// persistent session on this node (none is held here, or a clean start
// ends the one that is), so that what an earlier session of the client
// left on this node's subject is never replayed as the new session's.
type StayMarker interface {
	StartStay(clientID string)
}

// LaterForwarder is implemented by a backplane that can name a message
// at once and send it later: a QoS 2 message from a client leaves its
// node only once its packet ID is replicated (ForwardLater's send, called
// after the publish's commit), so a publisher that resends it to another
// node after losing this one does not have it routed twice.
type LaterForwarder interface {
	ForwardLater(m *session.Message) (remote bool, safe <-chan struct{}, send func(ok, replicated bool))
}

// HeldBack is implemented by a LaterForwarder that may hold a named
// message back: it reports whether the message named o is still held,
// sent to no other node. A session handed over carries the names of such
// messages' packet IDs, so that the resend is routed where it went.
type HeldBack interface {
	HeldBack(o session.Origin) bool
}

// Fencer is implemented by a backplane whose node can be fenced: cut off
// from the majority of its cluster, or woken from a freeze, it serves
// nothing until it has re-checked which sessions are still its own.
type Fencer interface {
	// Fence returns nil while the node serves, or a channel closed once
	// it serves again (the sessions that moved meanwhile evicted).
	Fence() <-chan struct{}
}

// waitFence holds a QoS 1/2 PUBLISH read while the node is fenced until
// it serves again, and reports whether its publisher's session is still
// here then. A publish is routed to this node's sessions before it is
// acknowledged: taken from a publisher whose session another node took
// over meanwhile (it resends there), it would reach them twice.
func (h *handler) waitFence() bool {
	f, ok := h.b.backplane.(Fencer)
	if !ok {
		return true
	}
	g := f.Fence()
	if g == nil {
		return true
	}
	select {
	case <-g:
	case <-h.c.Done():
		return false
	}
	h.cl.mu.Lock()
	defer h.cl.mu.Unlock()
	return !h.cl.ended && h.cl.conn == h.c
}

// Mirror is implemented by a backplane that replicates the queued and
// inflight deliveries of persistent sessions, so that another node can
// recover them if this one is lost.
type Mirror interface {
	// MirrorDeliveries replicates changes the store has just committed,
	// in order. With wait set (the operation's packets, a PUBACK among
	// them, are held until it returns) it returns once the changes are
	// replicated or a bounded wait ran out; otherwise at once. It reports
	// whether the changes are known to be replicated (always false
	// without wait). It is called without broker locks held.
	MirrorDeliveries(ops []MirrorOp, wait bool) (replicated bool)
}

// MirrorOp is one change to a persistent session's deliveries: Out set
// stores (or updates) the delivery with sequence number Seq, nil removes
// it (acknowledged, expired or dropped). With Inbound set it is about a
// QoS 2 packet ID received from the client instead: stored (awaiting
// PUBREL), or removed when Released.
//
// Rev orders the changes of one session: it increases, node-wide, in the
// order the session made them (taken under its lock). Operations commit,
// and so reach MirrorDeliveries, in any order: a delivery queued by a
// publish may be committed after the acknowledgement that sent it with
// its packet ID, and that older change must not win.
type MirrorOp struct {
	ClientID string
	Seq      uint64
	Out      *SnapshotDelivery
	Inbound  uint16
	Released bool
	Rev      uint64
	// Origin is, for a stored inbound packet ID, the name of the message
	// received under it (zero if unknown).
	Origin session.Origin
}

// nameInbound adds the name of the message received under clientID's
// inbound packet ID id to the operation's change storing that ID.
func (t *tx) nameInbound(clientID string, id uint16, o session.Origin) {
	if t == nil {
		return
	}
	for i := range t.mirror {
		if op := &t.mirror[i]; op.ClientID == clientID && op.Inbound == id && !op.Released && op.Out == nil {
			op.Origin = o
		}
	}
}

// rev numbers a change; the caller holds the session's lock.
func (b *Broker) rev() uint64 { return b.mirrorRev.Add(1) }

func (b *Broker) mirrorPut(id string, seq uint64, d *session.Delivery, packetID uint16, state byte) MirrorOp {
	sd := snapshotDelivery(d, packetID, state)
	return MirrorOp{ClientID: id, Seq: seq, Out: &sd, Rev: b.rev()}
}

// snapshotDelivery is a delivery as it moves between nodes.
func snapshotDelivery(d *session.Delivery, packetID uint16, state byte) SnapshotDelivery {
	return SnapshotDelivery{Msg: *toStore(d.Msg), QoS: d.QoS, Retain: d.Retain, SubIDs: d.SubIDs,
		Group: d.Group, Filter: d.Filter, PacketID: packetID, State: state}
}

// MirrorAll hands the backplane every delivery of every persistent
// session as it stands, so that its replicated copy is complete (after a
// restart, or once the replicated state first becomes available).
func (b *Broker) MirrorAll() {
	if b.mirror == nil {
		return
	}
	b.mu.Lock()
	cls := make([]*client, 0, len(b.clients))
	for _, cl := range b.clients {
		cls = append(cls, cl)
	}
	b.mu.Unlock()
	var ops []MirrorOp
	for _, cl := range cls {
		cl.mu.Lock()
		if !cl.ended && cl.persistent() {
			in := cl.sess.Export(func(d *session.Delivery, packetID uint16, state byte) {
				ops = append(ops, b.mirrorPut(cl.id, d.Seq, d, packetID, state))
			})
			for _, id := range in {
				ops = append(ops, MirrorOp{ClientID: cl.id, Inbound: id, Rev: b.rev(), Origin: cl.sess.InboundOrigin(id)})
			}
		}
		cl.mu.Unlock()
		if len(ops) >= 1024 {
			b.mirror.MirrorDeliveries(ops, false)
			ops = nil
		}
	}
	if len(ops) > 0 {
		b.mirror.MirrorDeliveries(ops, false)
	}
}

// ErrSessionMoving is wrapped by a Claim that failed while the session's
// owner is alive and kept it: the connect is refused (server unavailable)
// so that the client retries, rather than going ahead without its session.
var ErrSessionMoving = errors.New("session is moving between nodes")

// ErrNotReady is wrapped by a Claim refused because this node cannot serve
// as part of its cluster now (starting, or cut off from the majority of
// its nodes): the connect is refused (server unavailable) so that the
// client retries, here later or on another node.
var ErrNotReady = errors.New("cluster node not ready")

// SessionSnapshot is a session as it moves between nodes.
type SessionSnapshot struct {
	Session store.Session
	Subs    []store.Subscription
	Out     []SnapshotDelivery // inflight, then queued, in order
	Inbound []uint16           // QoS 2 packet IDs awaiting PUBREL
	// InboundOrigins are the names of the messages received under
	// Inbound's IDs, in the same order (zero: unknown; nil: none known).
	InboundOrigins []session.Origin `json:",omitempty"`
	// Taken are the origins of the messages the session took last,
	// oldest first, so that a copy reaching it by another path after it
	// moved is not delivered again (session.Session.Taken).
	Taken []session.Origin `json:",omitempty"`
}

// SnapshotDelivery is one outbound message of a session snapshot.
type SnapshotDelivery struct {
	Msg      store.Message
	QoS      byte
	Retain   bool
	SubIDs   []int
	Group    string
	Filter   string
	PacketID uint16 // 0 while queued
	State    byte
}

// SetBackplane plugs a cluster backplane in; call before Restore and
// serving.
func (b *Broker) SetBackplane(bp Backplane) {
	b.backplane = bp
	b.mirror, _ = bp.(Mirror)
	b.subs.OnInterest(bp.Interest)
}

// Inject delivers a message that another node received to the local
// subscribers (not to $share groups, which get theirs by InjectShared),
// without forwarding it again.
func (b *Broker) Inject(m *session.Message) int {
	t := b.begin(true)
	n := b.route(m, t, sharedNone)
	t.commit(m.QoS > 0)
	return n
}

// MovesCommitted counts the sessions handed over to other nodes so far.
func (b *Broker) MovesCommitted() uint64 { return b.moves.Load() }

// InjectTo delivers a message from another node to the named sessions
// only (their subscriptions that match it, no $share group): the sending
// node could not confirm that this node had received it for them. It
// reports whether the deliveries are safe, as InjectBatch does, and which
// of the sessions this node did not hold (not yet arrived, or gone).
func (b *Broker) InjectTo(m *session.Message, clientIDs []string) (safe bool, missing []string) {
	only := make(map[string]bool, len(clientIDs))
	t := b.begin(true)
	b.handMu.RLock()
	b.mu.Lock()
	for _, id := range clientIDs {
		if b.clients[id] != nil {
			only[id] = true
		} else {
			missing = append(missing, id)
		}
	}
	b.mu.Unlock()
	if len(only) > 0 {
		b.route(m, t, sharedMode{none: true, only: only})
	}
	b.handMu.RUnlock()
	return t.commit(m.QoS > 0) == nil && t.replicated(), missing
}

// InjectShared delivers a message to one member of the local share group
// (group, filter): the cluster chose this node for it.
func (b *Broker) InjectShared(m *session.Message, group, filter string) int {
	t := b.begin(true)
	n := b.route(m, t, sharedMode{group: group, filter: filter})
	t.commit(m.QoS > 0)
	return n
}

// ApplyRetained sets (or, with an empty payload, deletes) a retained
// message replicated from the cluster, without routing it: its subscribers
// got it from the node where it was published.
func (b *Broker) ApplyRetained(m *session.Message) {
	t := b.begin(false)
	b.retained.set(m)
	if len(m.Payload) == 0 {
		t.bt().DeleteRetained(m.Topic)
	} else {
		t.bt().PutRetained(toStore(m))
	}
	t.commit(false)
}

// RetainedTopics lists the topics of every retained message.
func (b *Broker) RetainedTopics() []string {
	ms, _ := b.RetainedMatching("#", 0)
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.Topic)
	}
	return out
}

// Restored is closed once Restore has returned: the sessions a backplane
// reconciles with the cluster are all loaded.
func (b *Broker) Restored() <-chan struct{} { return b.restored }

// SessionIDs lists the client IDs of every session on this node.
func (b *Broker) SessionIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]string, 0, len(b.clients))
	for id := range b.clients {
		ids = append(ids, id)
	}
	return ids
}

// HandOff is a session another node is taking over, held here until that
// node confirms it has the state (CommitHandOver) or gives up
// (AbortHandOver).
type HandOff struct {
	// Snapshot is the session's state; nil when there is nothing to move
	// (a clean start, no session, or one that ends with its connection),
	// in which case the session is gone already and no commit is needed.
	Snapshot *SessionSnapshot
	cl       *client
	lastSeq  uint64 // the last delivery in Snapshot
}

// PrepareHandOver starts letting another node take clientID's session: the
// connection, if any, is closed as in a takeover (DISCONNECT 0x8E for
// MQTT 5) and the will is published if the takeover ends it. A session
// with state to move stays here, offline and unchanged, until
// CommitHandOver or AbortHandOver, so a transfer that fails loses nothing;
// its expiry runs meanwhile as for any disconnected session.
func (b *Broker) PrepareHandOver(clientID string, clean bool) *HandOff {
	t := b.begin(true)
	var will *willState
	var snap *SessionSnapshot
	var lastSeq uint64
	var shared []session.Delivery
	var cl *client
	func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		cl = b.clients[clientID]
		if cl == nil {
			return
		}
		cl.mu.Lock()
		defer cl.mu.Unlock()
		attached := cl.conn != nil
		if attached {
			b.closeTakenOver(cl)
		}
		if w := cl.will; w != nil {
			// As for a local takeover [MQTT-3.1.3-9]: a new connection
			// within the will delay cancels the will unless the session
			// ends now.
			if w.delay == 0 || clean {
				will = w
			}
			cl.cancelWill()
		}
		if !clean && cl.sess.ExpiryInterval > 0 {
			snap, lastSeq = b.snapshotLocked(cl, 0)
			if attached {
				// Offline until the commit: if the transfer fails, the
				// session ages here like any disconnected one.
				b.goOffline(cl, whyHandingOver, b.now())
				if cl.persistent() {
					t.bt().PutSession(cl.sessionRecord(cl.lifeSince()))
				}
			}
			return
		}
		shared = b.endSession(cl, t)
	}()
	if will != nil {
		// In the operation that takes it out of the store.
		b.publishWillIn(will, t)
	}
	if err := t.commit(true); err != nil && will != nil {
		t.rollback() // the store has the will pending still
	}
	if snap == nil && len(shared) > 0 {
		b.redeliverShared(cl, shared)
	}
	return &HandOff{Snapshot: snap, cl: cl, lastSeq: lastSeq}
}

// closeTakenOver closes cl's connection because another node took the
// session; the caller holds b.mu and cl.mu.
func (b *Broker) closeTakenOver(cl *client) {
	cl.closeConn(packet.SessionTakenOver, "session taken over by another node")
	cl.conn = nil
	cl.sess.Detach()
	cl.wakeRoomLocked()
	b.Stats.connected(cl.version, -1)
	b.log.Info("session taken over by another node", "client_id", cl.id)
}

// CommitHandOver ends a session prepared by PrepareHandOver: the other
// node has its state now. Its inflight $share messages went with it. It
// returns the deliveries queued for the session since the snapshot, for
// the other node to append.
//
// moved, if set, runs first, while no message is being routed: it points
// forwarding at the session's new node, so that what this node no longer
// delivers to the session goes there.
func (b *Broker) CommitHandOver(h *HandOff, moved func()) (tail []SnapshotDelivery) {
	if h == nil || h.Snapshot == nil || h.cl == nil {
		return nil
	}
	cl := h.cl
	t := b.begin(true)
	func() {
		b.handMu.Lock()
		defer b.handMu.Unlock()
		if moved != nil {
			moved()
		}
		b.moves.Add(1)
		b.mu.Lock()
		defer b.mu.Unlock()
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.ended || b.clients[cl.id] != cl {
			return // expired meanwhile
		}
		if cl.conn != nil {
			// The client came back here during the transfer; the
			// other node owns the session now all the same.
			b.closeTakenOver(cl)
		}
		cl.cancelWill()
		if s, _ := b.snapshotLocked(cl, h.lastSeq); s != nil {
			tail = s.Out
		}
		b.endSession(cl, t)
	}()
	t.commit(true)
	return tail
}

// AbortHandOver keeps a session whose transfer failed: it stays here,
// offline, with everything it had.
func (b *Broker) AbortHandOver(h *HandOff) {
	if h == nil || h.Snapshot == nil || h.cl == nil {
		return
	}
	h.cl.mu.Lock()
	defer h.cl.mu.Unlock()
	if !h.cl.ended {
		b.log.Info("session hand-over to another node failed; keeping the session", "client_id", h.cl.id)
		b.recordSession(h.cl)
	}
}

// snapshotLocked captures cl's session, with the deliveries after
// sequence number after, and returns the last one's; the caller holds
// cl.mu.
func (b *Broker) snapshotLocked(cl *client, after uint64) (*SessionSnapshot, uint64) {
	s := &SessionSnapshot{Session: store.Session{ClientID: cl.id, Version: cl.version, ExpiryInterval: cl.sess.ExpiryInterval,
		DisconnectedAt: cl.offlineSince()}}
	s.Subs = b.clientSubs(cl.id)
	s.Taken = cl.sess.Remembered()
	last := after
	s.Inbound = cl.sess.Export(func(d *session.Delivery, packetID uint16, state byte) {
		if after > 0 && d.Seq <= after {
			return
		}
		last = max(last, d.Seq)
		s.Out = append(s.Out, snapshotDelivery(d, packetID, state))
	})
	// The names of the inbound IDs' messages only for those restored
	// from a lost node's record and not resent yet, and those received
	// here that the backplane still holds back (their packet IDs not
	// replicated yet: a node fenced, or cut from the queue stream): this
	// node routed every other message it received itself (a resend of
	// one is not routed again), but not those, which the lost node may
	// not have routed everywhere, or which this node will not send once
	// the session has left; without their names the node the session
	// moves to would take the resend as already routed, and nobody would
	// route it.
	held, _ := b.backplane.(HeldBack)
	for i, id := range s.Inbound {
		o := cl.sess.ReplayOrigin(id)
		if in := cl.sess.InboundOrigin(id); o.IsZero() && held != nil && !in.IsZero() && held.HeldBack(in) {
			o = in
		}
		if !o.IsZero() {
			if s.InboundOrigins == nil {
				s.InboundOrigins = make([]session.Origin, len(s.Inbound))
			}
			s.InboundOrigins[i] = o
		}
	}
	return s, last
}

// clientSubs lists a client's subscriptions as stored.
func (b *Broker) clientSubs(id string) []store.Subscription {
	var subs []store.Subscription
	b.subs.ClientSubscriptions(id, func(group, filter string, v subValue) bool {
		f := filter
		if group != "" {
			f = "$share/" + group + "/" + filter
		}
		subs = append(subs, store.Subscription{Filter: f, Options: v.opts, ID: v.id})
		return true
	})
	return subs
}

// Adopt installs a session handed over by another node, unless this node
// already has one for the client (which then wins). It is called before
// the client's connection attaches.
func (b *Broker) Adopt(s *SessionSnapshot) {
	t := b.begin(true)
	defer t.commit(true)
	b.adoptIn(s, t)
}

// adoptIn is Adopt in the operation t, which the caller commits.
func (b *Broker) adoptIn(s *SessionSnapshot, t *tx) {
	id := s.Session.ClientID
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.clients[id] != nil || b.closing {
		return
	}
	cl := &client{id: id, version: s.Session.Version, sess: session.New(id, b.sessionLimitsFor(id))}
	cl.sess.ExpiryInterval = s.Session.ExpiryInterval
	b.clients[id] = cl
	cl.mu.Lock()
	defer cl.mu.Unlock()
	// Until the connection attaches, the session ages like any offline
	// one: since it went offline on its old node, not from the move (from
	// now if it was connected until the move).
	b.goOffline(cl, whyAdopted, s.Session.DisconnectedAt)
	if b.store != nil && cl.sess.ExpiryInterval > 0 {
		cl.durable = true
		t.bt().PutSession(cl.sessionRecord(cl.lifeSince()))
	}
	for i := range s.Subs {
		sub := &s.Subs[i]
		group, inner, shared := topic.ParseShared(sub.Filter)
		if !shared {
			inner = sub.Filter
		}
		if topic.ValidateFilter(inner) != nil {
			continue
		}
		b.subs.Add(id, group, inner, subValue{cl: cl, opts: sub.Options, id: sub.ID})
		if cl.persistent() {
			t.bt().PutSubscription(id, sub)
		}
	}
	cl.sess.RememberAll(s.Taken)
	// Back on a node that evicted it a moment ago: what its client had
	// acknowledged here is known to this node alone when the node that
	// took it over recovered it from the queue stream. A copy of such a
	// message that the other node queued for the session meanwhile (a
	// late relayed copy) is not restored: the client has it.
	acked := b.evicted.take(id, b.now())
	cl.sess.RememberAll(acked)
	var had map[store.Origin]bool
	if len(acked) > 0 {
		had = make(map[store.Origin]bool, len(acked))
		for _, o := range acked {
			had[store.Origin(o)] = true
		}
	}
	if cl.persistent() {
		cl.sess.TakenRecords(func(slot uint16, o session.Origin, n uint64) {
			t.bt().PutTaken(id, slot, store.Taken{Origin: store.Origin(o), N: n})
		})
	}
	for i, o := range s.Out {
		if o.PacketID == 0 && had[o.Msg.Origin] {
			b.Stats.Repeats.Add(1)
			continue
		}
		m := fromStore(&o.Msg)
		d := session.Delivery{Msg: m, QoS: o.QoS, Retain: o.Retain, SubIDs: o.SubIDs, Group: o.Group, Filter: o.Filter, Seq: uint64(i + 1)}
		cl.sess.Restore(d, o.PacketID, o.State)
		if cl.persistent() {
			b.ref(t.bt(), m)
			t.bt().PutOutbound(id, d.Seq, &store.Outbound{MessageID: m.ID, QoS: d.QoS, Retain: d.Retain, SubIDs: d.SubIDs,
				Group: d.Group, Filter: d.Filter, PacketID: o.PacketID, State: o.State})
			if b.mirror != nil {
				t.mirror = append(t.mirror, b.mirrorPut(id, d.Seq, &d, o.PacketID, o.State))
			}
		}
	}
	for i, pid := range s.Inbound {
		cl.sess.RestoreInbound(pid)
		var o session.Origin
		if i < len(s.InboundOrigins) {
			o = s.InboundOrigins[i]
			cl.sess.NameInbound(pid, o)
		}
		if cl.persistent() {
			t.bt().PutInbound(id, pid)
			if b.mirror != nil {
				t.mirror = append(t.mirror, MirrorOp{ClientID: id, Inbound: pid, Rev: b.rev(), Origin: o})
			}
		}
	}
}

// DropSession removes a session this node restored from its store but
// another node owns now; nothing is published.
func (b *Broker) DropSession(clientID string) { b.dropSession(clientID, false) }

// EvictSession removes a session another node took over while this one
// was out of touch with the cluster, closing its connection at once if one
// is attached: packets still waiting to go out on it (an acknowledgement
// held while the node was fenced) never do. Nothing is published: the
// node that took it over handled the will. It returns the deliveries the
// session held: the node that took it over recovered those the queue
// stream had, and the others (queued here while the stream could not be
// reached, for a publisher whose acknowledgement is still held) must
// follow it; each is named, so the session takes it once.
func (b *Broker) EvictSession(clientID string) []SnapshotDelivery {
	c, out := b.dropSession(clientID, true)
	if c != nil {
		c.Close() // not CloseAfter: nothing queued may go out
	}
	return out
}

// dropSession ends a session another node owns; with evict, also one with
// a connection attached, whose conn it returns for the caller to close
// once the locks are released, and the deliveries the session held.
func (b *Broker) dropSession(clientID string, evict bool) (attached *conn.Conn, out []SnapshotDelivery) {
	t := b.begin(false)
	defer t.commit(false)
	b.mu.Lock()
	defer b.mu.Unlock()
	cl := b.clients[clientID]
	if cl == nil {
		return nil, nil
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != nil {
		if !evict {
			return nil, nil // a client is attached here: it is ours after all
		}
		attached = cl.conn
		b.closeTakenOver(cl)
	}
	if evict && cl.persistent() {
		held := make(map[session.Origin]bool)
		cl.sess.Export(func(d *session.Delivery, _ uint16, _ byte) {
			held[d.Msg.Origin] = true
			if d.Group == "" {
				out = append(out, snapshotDelivery(d, 0, session.StateQueued))
			}
		})
		b.evicted.keep(clientID, cl.sess.Remembered(), held, b.now())
	}
	cl.cancelWill()
	b.endSession(cl, t)
	return attached, out
}

// recordSession tells the backplane what another node needs if this one
// is lost: a persistent session's subscriptions, and any client's pending
// will. The caller holds cl.mu.
func (b *Broker) recordSession(cl *client) {
	if b.backplane == nil || cl.ended {
		return
	}
	if cl.sess.ExpiryInterval == 0 && cl.will == nil {
		return // nothing to recover; the ownership record stays
	}
	s := &SessionSnapshot{Session: *cl.sessionRecord(cl.offlineSince())}
	if cl.sess.ExpiryInterval > 0 {
		s.Subs = b.clientSubs(cl.id)
	}
	b.backplane.SessionChanged(s)
}

// AdoptOrphan takes over the recorded state of a session whose node was
// lost. If its client is reconnecting now, the will is published only if
// the takeover ends the session or the will had no delay [MQTT-3.1.3-9];
// otherwise the session waits here offline, its will timer running from
// now as if the connection had just dropped. A session without expiry
// only has its will published.
func (b *Broker) AdoptOrphan(s *SessionSnapshot, reconnecting, clean bool) {
	var w *willState
	if sw := s.Session.Will; sw != nil {
		m := fromStore(&sw.Message)
		m.Publisher = s.Session.ClientID
		if sw.ExpiryInterval != 0 {
			e := sw.ExpiryInterval
			m.Props.MessageExpiry = &e
		}
		w = &willState{msg: m, delay: sw.Delay}
	}
	ends := s.Session.ExpiryInterval == 0 || (reconnecting && clean)
	// One operation installs the session and publishes its will, or
	// keeps the will pending with it: a crash in between left the
	// session stored here without its will, which no node then
	// published (the record that still names this node with the will
	// is read again only for a session this node does not hold).
	t := b.begin(true)
	if !ends {
		// Subscriptions first: whoever reacts to the will finds the
		// session already collecting its messages.
		s.Session.Will = nil
		b.adoptIn(s, t)
	}
	if w != nil && (ends || w.delay == 0) {
		b.publishWillIn(w, t)
		w = nil
	}
	if !ends && !reconnecting && w != nil {
		w = b.orphanWill(s.Session.ClientID, w, t)
		if w != nil {
			b.publishWillIn(w, t) // its delay ran out on the lost node
		}
	}
	t.commit(true)
}

// orphanWill gives an adopted session, offline here, the will it had on
// its lost node, its delay counted from now, stored with the session in
// t. It returns the will if it is due at once.
func (b *Broker) orphanWill(clientID string, w *willState, t *tx) (due *willState) {
	b.mu.Lock()
	cl := b.clients[clientID]
	b.mu.Unlock()
	if cl == nil {
		return nil
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != nil || cl.ended || cl.will != nil {
		return nil
	}
	// The will counts from now; the session's expiry, set by Adopt, from
	// when it went offline on the lost node.
	cl.will = w
	cl.offline().why = whyOrphaned
	if due = b.startWill(cl, b.now()); due == nil && cl.persistent() {
		t.bt().PutSession(cl.sessionRecord(cl.lifeSince()))
	}
	return due
}

// heldWill is a will restored from the store in a cluster, waiting to
// learn whether this node still owns its session.
type heldWill struct {
	cl    *client
	w     *willState
	since time.Time // when its connection ended (or the restore)
}

// ReleaseWills settles the wills Restore held back in a cluster, where
// another node may have taken a session over (and handled its will) while
// this one was down. The wills of sessions this node still owns (owned
// says, from the cluster's records) are published, or wait out what is
// left of their delay; the others are dropped, so each will is published
// once cluster-wide. owned is called without broker locks held.
func (b *Broker) ReleaseWills(owned func(clientID string) bool) {
	b.mu.Lock()
	held := b.heldWills
	b.heldWills = nil
	b.mu.Unlock()
	var publish []*willState
	t := b.begin(true)
	for _, h := range held {
		mine := owned(h.cl.id)
		cl, w := h.cl, h.w
		cl.mu.Lock()
		w.held = false
		switch {
		case w.heldEnded:
			if mine {
				publish = append(publish, w)
			}
		case cl.will != w:
			// Settled meanwhile by a reconnect or a hand-over.
		case !mine:
			cl.will = nil
		default:
			// What is left of its delay, counted from when its
			// connection ended.
			if due := b.startWill(cl, h.since); due != nil {
				publish = append(publish, due)
				if t != nil && cl.persistent() && !cl.ended {
					t.bt().PutSession(cl.sessionRecord(h.since))
				}
			}
		}
		cl.mu.Unlock()
	}
	// In the operation that takes the due wills out of their records: a
	// crash between two commits would lose them.
	for _, w := range publish {
		b.publishWillIn(w, t)
	}
	if err := t.commit(len(publish) > 0); err != nil {
		t.rollback()
	}
}

// HasSession reports whether this node has a session for clientID.
func (b *Broker) HasSession(clientID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.clients[clientID] != nil
}

// SessionIncarnation identifies the session this node holds for clientID
// now (ok false: none). A session installed anew (handed over, taken over,
// restored, or started clean after another ended) has another value than
// the one it replaced, so a caller can tell whether what it learned of a
// session still holds.
func (b *Broker) SessionIncarnation(clientID string) (incarnation uint64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cl := b.clients[clientID]
	if cl == nil {
		return 0, false
	}
	if cl.incarnation == 0 {
		b.lastIncarn++
		cl.incarnation = b.lastIncarn
	}
	return cl.incarnation, true
}

// SessionMemory returns the names of the messages clientID's persistent
// session here remembers taking, oldest first (session.Session.Remembered),
// but those of the deliveries it still holds; ok is false if this node
// holds no persistent session for it. The backplane writes them to the
// queue stream before it purges the entries that delivered them, so that
// a session recovered from the stream still knows them. A held delivery
// is remembered by a replay from its own entry: named here as well, it
// would have the replay skip a relayed copy of it while its entry had
// not reached the stream (a write refused, rewritten at the next resync),
// and so lose it.
func (b *Broker) SessionMemory(clientID string) (taken []session.Origin, ok bool) {
	b.mu.Lock()
	cl := b.clients[clientID]
	b.mu.Unlock()
	if cl == nil {
		return nil, false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.ended || !cl.persistent() {
		return nil, false
	}
	held := make(map[session.Origin]bool)
	cl.sess.Export(func(d *session.Delivery, _ uint16, _ byte) { held[d.Msg.Origin] = true })
	return slices.DeleteFunc(cl.sess.Remembered(), func(o session.Origin) bool { return held[o] }), true
}
