package broker

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/conn"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/topic"
)

// tx is one broker operation's store batch. Packets sent during the
// operation that depend on it being durable (acknowledgements, deliveries to
// persistent sessions) wait on gate, which opens when the batch is committed:
// the connection's writer holds them back, so nothing goes out before the
// store has it and no lock is held while the disk syncs.
type tx struct {
	b      *Broker
	batch  store.Batch   // made at the first change (bt): most QoS 0 publishes write nothing
	gate   chan struct{} // nil unless gated: only gated sends wait on it
	gated  bool          // sends of this operation wait for the commit
	failed atomic.Bool

	// What a failed publish must undo in memory.
	delivered []delivered
	retained  *retainUndo

	// Changes to persistent sessions' deliveries for the backplane to
	// replicate once the batch is committed (cluster only), and whether
	// the backplane did.
	mirror   []MirrorOp
	unmirror bool

	// remote, if set, is closed once the other nodes that keep the
	// published message for persistent sessions have it (cluster only):
	// the publisher's acknowledgement waits for it (AckGate).
	remote <-chan struct{}
	// later asks publish to name the message but send it to the other
	// nodes only once the operation is committed (QoS 2 from a client,
	// LaterForwarder); forward then sends it.
	later   bool
	forward func(ok, replicated bool)
	// hold is the Hold of the message this operation publishes, done
	// once it is committed: its own sends wait for the commit anyway.
	hold *publishHold
}

// publishHold is a message's Hold until its publish is committed.
type publishHold struct {
	done   chan struct{}
	failed atomic.Bool
	once   sync.Once
}

func (h *publishHold) Done() <-chan struct{} { return h.done }
func (h *publishHold) OK() bool              { return !h.failed.Load() }

// release ends the hold, failed or not, the first time; nil does
// nothing.
func (h *publishHold) release(failed bool) {
	if h != nil {
		h.once.Do(func() {
			h.failed.Store(failed)
			close(h.done)
		})
	}
}

// sendForward sends the message named by a publish with later set, once
// its operation is committed (ok) or failed.
func (t *tx) sendForward(ok bool) {
	if t != nil && t.forward != nil {
		t.forward(ok, ok && t.replicated())
		t.forward = nil
	}
}

type delivered struct {
	cl  *client
	seq uint64
}

type retainUndo struct {
	topic    string
	old, new *session.Message
}

// Done and OK make a gated tx the conn.Gate its sends wait behind.
func (t *tx) Done() <-chan struct{} { return t.gate }
func (t *tx) OK() bool              { return !t.failed.Load() }

// begin starts an operation; nil without a store.
func (b *Broker) begin(gated bool) *tx {
	if b.store == nil {
		return nil
	}
	t := &tx{b: b, gated: gated}
	if gated {
		t.gate = make(chan struct{})
	}
	return t
}

// bt is the operation's batch, made on first use. An operation runs on one
// goroutine, so no lock is needed.
func (t *tx) bt() store.Batch {
	if t.batch == nil {
		t.batch = t.b.store.NewBatch()
	}
	return t.batch
}

// commit applies the batch (synced when sync) and opens the gate. A failed
// commit is logged and counted; the caller refuses what it was about to
// acknowledge.
func (t *tx) commit(sync bool) error {
	if t == nil {
		return nil
	}
	if t.gate != nil {
		defer close(t.gate)
	}
	if t.batch == nil || t.batch.Len() == 0 {
		return nil
	}
	start := time.Now()
	err := t.bt().Commit(sync)
	if sync {
		t.b.Traffic.CommitSynced.Observe(time.Since(start))
	} else {
		t.b.Traffic.CommitUnsynced.Observe(time.Since(start))
	}
	if err != nil {
		t.failed.Store(true) // before the gate opens: its packets are dropped
		t.b.Stats.StoreErrors.Add(1)
		t.b.log.Error("store commit failed", "err", err)
		return err
	}
	if len(t.mirror) > 0 {
		// Before the gate opens: the PUBACK of a publish that queued a
		// message for a persistent session means the cluster has it too.
		t.unmirror = !t.b.mirror.MirrorDeliveries(t.mirror, t.gated)
		t.mirror = nil
	}
	return nil
}

// replicated reports whether the committed changes are replicated, where
// the backplane replicates them.
func (t *tx) replicated() bool { return t == nil || !t.unmirror }

// ackGate is what a publisher's acknowledgement waits behind: the other
// nodes having the message (Backplane.Forward); nil for nothing.
func (t *tx) ackGate() conn.Gate {
	if t == nil || t.remote == nil {
		return nil
	}
	return remoteGate(t.remote)
}

// remoteGate opens when the backplane has the message where it must be.
// It never fails: a message the backplane gave up on is logged and
// counted there, and the publisher has its local deliveries.
type remoteGate <-chan struct{}

func (g remoteGate) Done() <-chan struct{} { return g }
func (g remoteGate) OK() bool              { return true }

// rollback undoes in memory what a failed publish did: the deliveries it
// made (their packets, held behind the gate, are dropped by the writers)
// and a retained message it set. The publisher is told it was refused, so
// nothing of it may remain.
func (t *tx) rollback() {
	for _, d := range t.delivered {
		d.cl.mu.Lock()
		d.cl.sess.Revoke(d.seq)
		d.cl.mu.Unlock()
	}
	if u := t.retained; u != nil {
		t.b.retained.undo(u.topic, u.old, u.new)
	}
}

// send queues packets on a connection, behind the operation's gate when
// the operation is gated, and behind the Hold of a message they deliver
// that is not released yet. c is the concrete type, not an interface, so
// the variadic slice of a single delivery stays on the stack.
func (t *tx) send(c *conn.Conn, ps ...packet.Packet) {
	if holds := t.holding(ps); holds != nil {
		var g conn.Gate
		if t != nil && t.gated {
			g = t
		}
		c.SendGated(newHeldGate(g, holds), ps...)
		return
	}
	if t != nil && t.gated {
		c.SendGated(t, ps...)
		return
	}
	c.Send(ps...)
}

// holding returns the Holds, not closed yet, of the messages ps deliver,
// but this operation's own. Such a message is a QoS 2 message from a
// client whose publish is still committing (its packet ID not yet
// replicated with its name) that another operation sends: a session
// arriving on the node, or one whose client reconnects or makes room in
// its window meanwhile. Sent at once, its client could have it before the
// packet ID reached the queue stream; the node then lost, the publisher's
// resend elsewhere is a new message under a new name, and that session,
// recovered elsewhere, takes it again.
func (t *tx) holding(ps []packet.Packet) (holds []session.Release) {
	for _, p := range ps {
		o, ok := p.(*session.Outgoing)
		if !ok || o.Msg == nil || o.Msg.Hold == nil || t != nil && t.hold != nil && o.Msg.Hold == session.Release(t.hold) {
			continue
		}
		select {
		case <-o.Msg.Hold.Done():
			if !o.Msg.Hold.OK() {
				holds = append(holds, o.Msg.Hold) // dropped: its publish failed
			}
		default:
			holds = append(holds, o.Msg.Hold)
		}
	}
	return holds
}

// heldGate opens once the operation's gate (if any) and every hold have;
// it fails if any of them did.
type heldGate struct {
	g     conn.Gate
	holds []session.Release
	done  chan struct{}
}

func newHeldGate(g conn.Gate, holds []session.Release) *heldGate {
	h := &heldGate{g: g, holds: holds, done: make(chan struct{})}
	go func() {
		if g != nil {
			<-g.Done()
		}
		for _, x := range holds {
			<-x.Done()
		}
		close(h.done)
	}()
	return h
}

func (h *heldGate) Done() <-chan struct{} { return h.done }

func (h *heldGate) OK() bool {
	for _, x := range h.holds {
		if !x.OK() {
			return false
		}
	}
	return h.g == nil || h.g.OK()
}

// SetStore makes the broker durable: call Restore with the same store
// before serving.
func (b *Broker) SetStore(st store.Store) { b.store = st }

// jr is the journal of cl's session changes in the operation t: t itself
// for a persistent session, nil for one nothing records. Every session
// call that may change a persistent session takes it, so its changes go
// into the batch of the operation they are part of. The caller holds
// cl.mu.
func (cl *client) jr(t *tx) session.Journal {
	if t == nil || !cl.persistent() {
		return nil // not a nil *tx in the interface: the session tests for nil
	}
	return t
}

// PutOutbound, DeleteOutbound, PutInbound and DeleteInbound make tx the
// session.Journal of a persistent session's changes: they go into the
// operation's batch, and to the backplane's replica once it commits.
func (t *tx) PutOutbound(clientID string, seq uint64, d *session.Delivery, packetID uint16, state byte, first bool) {
	bt := t.bt()
	if first {
		t.b.ref(bt, d.Msg)
	}
	t.b.msgMu.Lock()
	id := d.Msg.ID
	t.b.msgMu.Unlock()
	bt.PutOutbound(clientID, seq, &store.Outbound{MessageID: id, QoS: d.QoS, Retain: d.Retain, SubIDs: d.SubIDs,
		Group: d.Group, Filter: d.Filter, PacketID: packetID, State: state})
	if t.b.mirror != nil {
		t.mirror = append(t.mirror, t.b.mirrorPut(clientID, seq, d, packetID, state))
	}
}

func (t *tx) DeleteOutbound(clientID string, seq uint64, d *session.Delivery) {
	bt := t.bt()
	bt.DeleteOutbound(clientID, seq)
	t.b.unref(bt, d.Msg)
	if t.b.mirror != nil {
		t.mirror = append(t.mirror, MirrorOp{ClientID: clientID, Seq: seq, Rev: t.b.rev()})
	}
}

func (t *tx) PutInbound(clientID string, id uint16) {
	t.bt().PutInbound(clientID, id)
	if t.b.mirror != nil {
		t.mirror = append(t.mirror, MirrorOp{ClientID: clientID, Inbound: id, Rev: t.b.rev()})
	}
}

func (t *tx) PutTaken(clientID string, slot uint16, o session.Origin, n uint64) {
	t.bt().PutTaken(clientID, slot, store.Taken{Origin: store.Origin(o), N: n})
}

func (t *tx) DeleteInbound(clientID string, id uint16) {
	t.bt().DeleteInbound(clientID, id)
	if t.b.mirror != nil {
		t.mirror = append(t.mirror, MirrorOp{ClientID: clientID, Inbound: id, Released: true, Rev: t.b.rev()})
	}
}

// ref counts a stored delivery of m, storing the message body with the
// first.
func (b *Broker) ref(bt store.Batch, m *session.Message) {
	b.msgMu.Lock()
	defer b.msgMu.Unlock()
	if m.ID == 0 {
		b.lastMsgID++
		m.ID = b.lastMsgID
	}
	b.msgRefs[m.ID]++
	if b.msgRefs[m.ID] == 1 {
		bt.PutMessage(m.ID, toStore(m))
	}
}

// unref drops a stored delivery of m and the body with the last.
func (b *Broker) unref(bt store.Batch, m *session.Message) {
	b.msgMu.Lock()
	defer b.msgMu.Unlock()
	if m.ID == 0 {
		return
	}
	if n := b.msgRefs[m.ID] - 1; n > 0 {
		b.msgRefs[m.ID] = n
		return
	}
	delete(b.msgRefs, m.ID)
	bt.DeleteMessage(m.ID)
}

func toStore(m *session.Message) *store.Message {
	return &store.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Props: m.Props, Expiry: m.Expiry, Publisher: m.Publisher,
		Origin: store.Origin(m.Origin)}
}

func fromStore(m *store.Message) *session.Message {
	return &session.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Props: m.Props, Expiry: m.Expiry, Publisher: m.Publisher,
		Origin: session.Origin(m.Origin)}
}

// sessionRecord is the stored form of a persistent session.
func (cl *client) sessionRecord(disconnectedAt time.Time) *store.Session {
	r := &store.Session{ClientID: cl.id, Version: cl.version, ExpiryInterval: cl.sess.ExpiryInterval, DisconnectedAt: disconnectedAt}
	if w := cl.will; w != nil {
		sw := &store.Will{Message: *toStore(w.msg), Delay: w.delay}
		if e := w.msg.Props.MessageExpiry; e != nil {
			sw.ExpiryInterval = *e
			sw.Props.MessageExpiry = nil
		}
		r.Will = sw
	}
	return r
}

// offlineSince is when the session's last connection ended, zero while
// one is attached (or none ever was here). The caller holds cl.mu.
func (cl *client) offlineSince() time.Time {
	if cl.conn != nil {
		return time.Time{}
	}
	return cl.lifeSince()
}

// persistent reports whether the session is kept in the store.
func (cl *client) persistent() bool { return cl.durable }

// Restore loads the store's sessions, subscriptions, queued and inflight
// messages and retained messages. Sessions that expired while the broker was
// down are ended (their wills published); the rest wait offline, their
// expiry and will delay counted from when their connection ended, or from
// now for those connected when the broker stopped.
func (b *Broker) Restore() error {
	defer func() {
		select {
		case <-b.restored:
		default:
			close(b.restored)
		}
	}()
	if b.store == nil {
		return nil
	}
	start := b.now()
	msgs := make(map[uint64]*session.Message)
	type pendingDel struct {
		cl *client
		d  session.Delivery
		id uint16
		st byte
	}
	var nSess, nOut, nRet, nSubs int
	var records = map[string]*store.Session{}
	taken := map[string][]store.Taken{} // the sessions' memory of the messages they took
	err := b.store.Load(store.Visitor{
		Session: func(s *store.Session) error {
			cl := &client{id: s.ClientID, version: s.Version, sess: session.New(s.ClientID, b.sessionLimitsFor(s.ClientID))}
			cl.sess.ExpiryInterval = s.ExpiryInterval
			cl.durable = true
			b.clients[s.ClientID] = cl
			records[s.ClientID] = s
			nSess++
			return nil
		},
		Message: func(id uint64, m *store.Message) error {
			sm := fromStore(m)
			sm.ID = id
			msgs[id] = sm
			b.lastMsgID = max(b.lastMsgID, id)
			return nil
		},
		Subscription: func(clientID string, s *store.Subscription) error {
			cl := b.clients[clientID]
			if cl == nil {
				return nil // orphan: the session was deleted
			}
			group, inner, shared := topic.ParseShared(s.Filter)
			if !shared {
				inner = s.Filter
			}
			b.subs.Add(clientID, group, inner, subValue{cl: cl, opts: s.Options, id: s.ID})
			nSubs++
			return nil
		},
		Outbound: func(clientID string, seq uint64, o *store.Outbound) error {
			cl := b.clients[clientID]
			m := msgs[o.MessageID]
			if cl == nil || m == nil {
				return nil
			}
			b.msgRefs[m.ID]++
			cl.sess.Restore(session.Delivery{Msg: m, QoS: o.QoS, Retain: o.Retain, SubIDs: o.SubIDs, Group: o.Group, Filter: o.Filter, Seq: seq}, o.PacketID, o.State)
			nOut++
			return nil
		},
		Inbound: func(clientID string, id uint16) error {
			if cl := b.clients[clientID]; cl != nil {
				cl.sess.RestoreInbound(id)
			}
			return nil
		},
		Retained: func(m *store.Message) error {
			b.retained.set(fromStore(m))
			nRet++
			return nil
		},
		Taken: func(clientID string, _ uint16, x store.Taken) error {
			if b.clients[clientID] != nil {
				taken[clientID] = append(taken[clientID], x)
			}
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("broker: restore from store: %w", err)
	}
	for id, xs := range taken {
		slices.SortFunc(xs, func(a, b store.Taken) int { return cmp.Compare(a.N, b.N) })
		for _, x := range xs {
			b.clients[id].sess.RestoreTaken(session.Origin(x.Origin), x.N)
		}
	}
	// Messages nothing refers to any more (a crash between writes).
	t := b.begin(true) // gated, as publishWillIn wants; nothing is connected yet
	for id := range msgs {
		if b.msgRefs[id] == 0 {
			t.bt().DeleteMessage(id)
		}
	}
	now := b.now()
	var wills []*willState
	var ended int
	for id, r := range records {
		cl := b.clients[id]
		since := r.DisconnectedAt
		if since.IsZero() || since.After(now) {
			since = now // connected when the broker stopped: count from now
		}
		var w *willState
		if r.Will != nil {
			m := fromStore(&r.Will.Message)
			m.Publisher = id
			if r.Will.ExpiryInterval != 0 {
				e := r.Will.ExpiryInterval
				m.Props.MessageExpiry = &e
			}
			w = &willState{msg: m, delay: r.Will.Delay}
		}
		if _, expireAt := offlineDeadlines(since, cl.sess.ExpiryInterval, nil); !expireAt.IsZero() && !now.Before(expireAt) {
			b.endSession(cl, t)
			ended++
			if w != nil && b.backplane != nil {
				w.held, w.heldEnded = true, true
				b.heldWills = append(b.heldWills, heldWill{cl: cl, w: w, since: since})
			} else if w != nil {
				wills = append(wills, w)
			}
			continue
		}
		cl.will = w
		if w != nil && b.backplane != nil {
			// In a cluster, the node that took this session over while
			// this one was down has handled the will: it waits for
			// ReleaseWills to learn who owns the session.
			w.held = true
			b.heldWills = append(b.heldWills, heldWill{cl: cl, w: w, since: since})
		}
		if due := b.goOffline(cl, whyRestored, since); due != nil {
			wills = append(wills, due)
			t.bt().PutSession(cl.sessionRecord(since))
		}
	}
	// The wills due go into the operation that ends their sessions or
	// drops them from their records: one commit, so a crash during the
	// start neither loses them nor publishes them twice.
	for _, w := range wills {
		b.publishWillIn(w, t)
	}
	if err := t.commit(true); err != nil {
		return fmt.Errorf("broker: restore: %w", err)
	}
	b.log.Info("store loaded", "sessions", nSess-ended, "expired_sessions", ended, "subscriptions", nSubs,
		"queued_or_inflight", nOut, "retained", nRet, "took", b.now().Sub(start).Round(time.Millisecond))
	return nil
}
