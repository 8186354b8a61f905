package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/session"
)

// The queued and inflight QoS 1/2 deliveries of persistent sessions are
// mirrored to a replicated stream, one subject per session and owner
// node, so that the node that takes over a lost node's session recovers
// them. Each change is an entry: the delivery under its sequence number,
// or a removal. Entries below the oldest one still needed are purged.
const (
	queueStream = "starling_queue"
	queuePrefix = "stl.q."
	// mirrorWait bounds how long an operation's acknowledgements (a
	// PUBACK among them) wait for the stream; past it they go out with
	// the delivery durable on this node only (logged).
	mirrorWait = 2 * time.Second
	// purgeEvery is how often a session that always has something queued
	// has its acknowledged entries purged.
	purgeEvery = 5 * time.Second
	// maxMirrorPending bounds the entries sent but not yet acknowledged;
	// past it, committing operations wait (so a node slows down while the
	// stream elects a new leader rather than queue without bound).
	maxMirrorPending = 8192
	// removeEvery is how long the removals of acknowledged deliveries may
	// be held back to go out together (a node lost meanwhile has them
	// sent again: duplicates, not losses); maxHeldRemovals flushes
	// sooner.
	removeEvery     = 20 * time.Millisecond
	maxHeldRemovals = 4096
	// mirrorAckTimeout is when an entry without confirmation counts as
	// failed.
	mirrorAckTimeout = 5 * time.Second
	// goneFor is how long a removal's revision is kept to drop older
	// changes of the same delivery that reach the mirror after it (their
	// operations committed late); far above a store commit's duration.
	goneFor = time.Minute
)

type revKey struct {
	id string
	k  uint64
}

type lastRev struct {
	rev  uint64
	gone int64 // unix nanoseconds of the removal; 0 while the delivery is held
}

// queueChange is one change to a session's deliveries, or, with In set,
// to its QoS 2 packet IDs awaiting PUBREL.
type queueChange struct {
	Seq uint64                   `json:"seq,omitempty"`
	Out *broker.SnapshotDelivery `json:"out,omitempty"` // nil: removed
	In  uint16                   `json:"in,omitempty"`
	Rel bool                     `json:"rel,omitempty"` // In released
	// O names the message received under In (session.Message.Origin).
	O *session.Origin `json:"o,omitempty"`
}

// queueEntry is one message in the stream: a session's changes from one
// operation, in order. One entry per session and operation, rather than
// per change, is what keeps a batch of messages for a session cheap.
type queueEntry struct {
	C []queueChange `json:"c"`
	// S marks the start of a stay of the session on the node (markStay):
	// what the subject holds before it is an earlier stay's, whose purge
	// may have failed, and a replay starts after it.
	S bool `json:"s,omitempty"`
	// T is the session's memory of the messages it took, oldest first:
	// written before its entries are purged, and with a stay's marker
	// (memory.go).
	T []takenRun `json:"t,omitempty"`
}

// Bounds of one entry; a session's changes beyond them go in several.
const (
	entryChanges = 1024
	entryBytes   = 256 << 10
)

// inboundKey keeps inbound packet IDs apart from delivery sequence numbers
// in the tracker.
const inboundKey = 1 << 63

func queueSubject(clientID, node string) string {
	return queuePrefix + key(clientID) + "." + key(node)
}

// mirrorAck is an entry sent to the stream, for the tracker to learn its
// stream sequence number.
type mirrorAck struct {
	id    string // the session's client ID
	subj  string
	keys  []mirrorKey // the changes in the entry, in order
	f     jetstream.PubAckFuture
	batch *mirrorBatch // nil unless a caller waits for it
}

// mirrorKey is one change as the tracker sees it: a delivery's sequence
// number, or inboundKey|packet ID.
type mirrorKey struct {
	k   uint64
	put bool
}

// mirrorBatch is the puts of one operation its caller waits for.
type mirrorBatch struct {
	left atomic.Int32
	bad  atomic.Bool // an entry was not confirmed
	done chan struct{}
}

func (b *mirrorBatch) settle() {
	if b.left.Add(-1) == 0 {
		close(b.done)
	}
}

// mirror is the node's side of the stream; its zero value mirrors nothing.
type mirror struct {
	stream   atomic.Value // jetstream.Stream, once it exists
	js       jetstream.JetStream
	mu       sync.Mutex // orders sending entries with queueing their acks
	acks     chan mirrorAck
	failed   atomic.Uint64       // entries the stream did not confirm
	dirty    atomic.Bool         // a put failed since the last resync
	syncing  atomic.Bool         // a resync is running
	logged   atomic.Int64        // unix nanoseconds of the last failure logged
	purgesMu sync.Mutex          // guards purges
	purges   map[string]uint64   // subject -> purge below (0: all)
	memSeq   map[string]uint64   // subject -> stream sequence of its last memory entry (memory.go); under purgesMu
	rm       map[string][]uint64 // removals held back, by client ID; under mu
	rmCount  int
	// lost are the removals (and released inbound packet IDs) whose
	// entries the stream did not confirm, written again by the next
	// resync (retryRemovals); under lostMu, which the tracker takes
	// without mu (a sender holding mu may be waiting for the tracker).
	lostMu sync.Mutex
	lost   map[revKey]struct{}
	// last is, per session and delivery sequence number (or inboundKey|
	// packet ID), the revision of the last change sent, kept for
	// goneFor after a removal; under mu. See stale.
	last    map[revKey]lastRev
	purgeCh chan struct{}
	// holdFor (tests) holds the operations that change this client's
	// session until it is cleared, as a slow stream would.
	holdFor atomic.Pointer[string]
	// lose (tests) picks entries the stream is not to confirm, as when
	// it is unavailable: they go to a subject no stream holds.
	lose atomic.Pointer[func(clientID string, changes []queueChange) bool]
}

func (n *Node) queue() jetstream.Stream {
	s, _ := n.mir.stream.Load().(jetstream.Stream)
	return s
}

// openQueue creates (or opens) the queue stream.
func (n *Node) openQueue(js jetstream.JetStream, replicas int) jetstream.Stream {
	return n.openStream(js, jetstream.StreamConfig{Name: queueStream, Subjects: []string{queuePrefix + ">"},
		Replicas: replicas, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy})
}

// openStream creates (or opens) a stream, retrying like the buckets; nil
// once the node is closing.
func (n *Node) openStream(js jetstream.JetStream, cfg jetstream.StreamConfig) jetstream.Stream {
	var s jetstream.Stream
	if !n.untilSetUp("stream "+cfg.Name, func(ctx context.Context) error {
		var err error
		s, err = js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = js.CreateStream(ctx, cfg)
		}
		return err
	}) {
		return nil
	}
	return s
}

// startMirror begins mirroring once the stream exists: everything the
// persistent sessions hold now is written first (a restart forgets which
// entries were written before), then each change as it is committed.
func (n *Node) startMirror(s jetstream.Stream) error {
	js, err := jetstream.New(n.pc, jetstream.WithPublishAsyncMaxPending(maxMirrorPending), jetstream.WithPublishAsyncTimeout(mirrorAckTimeout))
	if err != nil {
		return fmt.Errorf("cluster: jetstream for the queue stream: %w", err)
	}
	n.mir.js = js
	n.mir.stream.Store(s)
	if n.cfg.LocalQueues {
		// Not mirrored, but the stream stays readable: sessions moving
		// here from nodes that do mirror keep their messages.
		n.wg.Add(1)
		go n.purgeLoop()
		return nil
	}
	n.wg.Add(3)
	go n.trackMirror()
	go n.purgeLoop()
	go n.removeLoop()
	n.b.MirrorAll()
	return nil
}

// MirrorDeliveries implements broker.Mirror.
func (n *Node) MirrorDeliveries(ops []broker.MirrorOp, wait bool) bool {
	if n.queue() == nil || n.mir.js == nil {
		return false // not yet: startMirror writes the whole state first
	}
	if n.holdMir.Load() {
		return n.heldMirror(wait)
	}
	for id := n.mir.holdFor.Load(); id != nil && slices.ContainsFunc(ops, func(op broker.MirrorOp) bool { return op.ClientID == *id }); id = n.mir.holdFor.Load() {
		select {
		case <-n.ctx.Done():
			return false
		case <-time.After(beatEvery / 5):
		}
	}
	var batch *mirrorBatch
	if wait {
		batch = &mirrorBatch{done: make(chan struct{})}
		batch.left.Store(1) // released below, once every put is counted
	}
	// One entry per session (in the order the sessions first appear),
	// holding its changes in order.
	type group struct {
		id      string
		changes []queueChange
		keys    []mirrorKey
		size    int
		waited  bool
	}
	var groups []*group
	open := make(map[string]*group)
	// Under mu from here: the revisions checked are those of the entries
	// sent, in the order they are sent.
	n.mir.mu.Lock()
	for _, op := range ops {
		if n.stale(op) {
			continue
		}
		g := open[op.ClientID]
		if g == nil || len(g.changes) >= entryChanges || g.size >= entryBytes {
			g = &group{id: op.ClientID}
			groups = append(groups, g)
			open[op.ClientID] = g
		}
		c, k := queueChange{Seq: op.Seq, Out: op.Out}, mirrorKey{op.Seq, op.Out != nil}
		if op.Inbound != 0 {
			c, k = queueChange{In: op.Inbound, Rel: op.Released}, mirrorKey{inboundKey | uint64(op.Inbound), !op.Released}
			if !op.Origin.IsZero() {
				o := op.Origin
				c.O = &o
			}
		}
		g.changes = append(g.changes, c)
		g.keys = append(g.keys, k)
		g.size += 64
		if op.Out != nil {
			g.size += len(op.Out.Msg.Topic) + len(op.Out.Msg.Payload)*4/3
		}
		// Waited for: new deliveries, and any change of the inbound
		// packet IDs (a stale one would swallow the client's next
		// message under that ID).
		g.waited = g.waited || k.put || op.Inbound != 0
	}
	for _, g := range groups {
		if !g.waited {
			// Only acknowledged deliveries: their removals wait to go
			// out with others (removeEvery).
			for _, k := range g.keys {
				n.mir.rm[g.id] = append(n.mir.rm[g.id], k.k)
			}
			n.mir.rmCount += len(g.keys)
			continue
		}
		if rm := n.mir.rm[g.id]; len(rm) > 0 {
			// Removals held back for this session go first, in order.
			var cs []queueChange
			var ks []mirrorKey
			for _, seq := range rm {
				cs = append(cs, queueChange{Seq: seq})
				ks = append(ks, mirrorKey{k: seq})
			}
			g.changes, g.keys = append(cs, g.changes...), append(ks, g.keys...)
			n.mir.rmCount -= len(rm)
			delete(n.mir.rm, g.id)
		}
		if !n.sendEntry(g.id, g.changes, g.keys, batch) {
			break
		}
	}
	big := n.mir.rmCount >= maxHeldRemovals
	n.mir.mu.Unlock()
	if big {
		n.flushRemovals()
	}
	if batch == nil {
		return false
	}
	batch.settle()
	began := n.lease.mono()
	t := time.NewTimer(mirrorWait)
	defer t.Stop()
	select {
	case <-batch.done:
		if !batch.bad.Load() {
			return true
		}
	case <-t.C:
		n.mirrorFailed(false, fmt.Errorf("no confirmation within %v; acknowledged with the messages on this node only", mirrorWait))
	case <-n.ctx.Done():
		return false
	}
	n.awaitHeardSince(began)
	return false
}

// heldMirror is MirrorDeliveries under the tests' holdMir: nothing
// reaches the stream, as when the node is cut off with the writes on their
// way, and a waited write ends as one that saw no confirmation does once
// the node is fenced: after the fence lifts.
func (n *Node) heldMirror(wait bool) bool {
	n.mir.dirty.Store(true)
	if !wait {
		return false
	}
	for n.fenceGate() == nil && n.holdMir.Load() {
		select {
		case <-n.ctx.Done():
			return false
		case <-time.After(beatEvery / 5):
		}
	}
	n.awaitHeardSince(n.lease.mono())
	return false
}

// stale reports whether op is older than a change of the same delivery
// (or inbound packet ID) already sent, and otherwise records it; the
// caller holds mir.mu. Operations reach the mirror in the order they
// commit, not the order the session made their changes: a delivery queued
// by a publish whose commit is slow may come after the acknowledgement
// that sent it under a packet ID (and the client's answer to that), and
// written after them it would have the node that recovers the session
// send it again as a new message. Rev 0 (unnumbered) is never stale.
func (n *Node) stale(op broker.MirrorOp) bool {
	k := revKey{op.ClientID, op.Seq}
	removal := op.Out == nil
	if op.Inbound != 0 {
		k.k, removal = inboundKey|uint64(op.Inbound), op.Released
	}
	if op.Rev == 0 {
		return false
	}
	if l, ok := n.mir.last[k]; ok && op.Rev < l.rev {
		return true
	}
	l := lastRev{rev: op.Rev}
	if removal {
		l.gone = time.Now().UnixNano()
	}
	n.mir.last[k] = l
	return false
}

// pruneGone forgets the revisions of deliveries removed over goneFor ago.
func (n *Node) pruneGone() {
	n.mir.mu.Lock()
	defer n.mir.mu.Unlock()
	old := time.Now().Add(-goneFor).UnixNano()
	for k, l := range n.mir.last {
		if l.gone != 0 && l.gone < old {
			delete(n.mir.last, k)
		}
	}
}

// awaitHeardSince returns once the majority has heard this node after
// instant began (its lease renewed since), or the node, fenced meanwhile,
// serves again: what was not replicated goes out durable on this node
// only, but not from a node that may have been declared lost meanwhile
// and had its sessions taken (it evicts those first, closing their
// connections, so what waits here never reaches their clients).
func (n *Node) awaitHeardSince(began int64) {
	if n.quorumPeers() == 0 {
		return
	}
	// Also ends once the broker's Close has cut every client off: nothing
	// waiting here can reach one then, and a node fenced for good (its
	// peers gone) would otherwise hold Close's wait for its handlers, and
	// so its shutdown, forever.
	for n.ctx.Err() == nil && !n.b.ClientsCut() {
		if g := n.fenceGate(); g != nil {
			select {
			case <-g:
				return
			case <-n.ctx.Done():
				return
			case <-time.After(beatEvery / 5):
				continue // Close may have cut the clients off
			}
		}
		if n.lease.until.Load()-int64(leaseFor) > began {
			return
		}
		select {
		case <-n.ctx.Done():
		case <-time.After(beatEvery / 5):
		}
	}
}

// sendEntry publishes one session's changes and hands the tracker their
// acknowledgement; the caller holds mir.mu, which orders the entries.
// False once the node is closing.
func (n *Node) sendEntry(id string, changes []queueChange, keys []mirrorKey, batch *mirrorBatch) bool {
	subj := queueSubject(id, n.cfg.Node)
	to := subj
	if h := n.mir.lose.Load(); h != nil && (*h)(id, changes) {
		to = "stl.lost." + key(id) // no stream: the entry is not confirmed
	}
	f, err := n.mir.js.PublishAsync(to, mustJSON(queueEntry{C: changes}), jetstream.WithStallWait(kvTimeout))
	if err != nil {
		n.mirrorFailed(true, err)
		n.loseRemovals(id, keys)
		if batch != nil {
			batch.bad.Store(true)
		}
		return true
	}
	a := mirrorAck{id: id, subj: subj, keys: keys, f: f}
	if batch != nil {
		batch.left.Add(1)
		a.batch = batch
	}
	select {
	case n.mir.acks <- a:
		return true
	case <-n.ctx.Done():
		return false
	}
}

// markStay writes the start of a stay of clientID's persistent session on
// this node to its subject, before the session is installed here (so
// before any of its entries): a replay of the subject starts after it.
// Without it, entries of an earlier stay on this node whose purge failed
// (the stream unavailable, as in a partition) were replayed with this
// stay's by a later takeover, as inflight messages the client had
// already received. The removals held back for the session (its earlier
// stay's) go out first. A marker that does not land leaves the subject
// as it was before markers.
func (n *Node) markStay(clientID string, taken []session.Origin) {
	if n.cfg.LocalQueues || n.queue() == nil || n.mir.js == nil {
		return
	}
	n.mir.mu.Lock()
	defer n.mir.mu.Unlock()
	if rm := n.mir.rm[clientID]; len(rm) > 0 {
		cs := make([]queueChange, len(rm))
		ks := make([]mirrorKey, len(rm))
		for i, seq := range rm {
			cs[i], ks[i] = queueChange{Seq: seq}, mirrorKey{k: seq}
		}
		n.mir.rmCount -= len(rm)
		delete(n.mir.rm, clientID)
		if !n.sendEntry(clientID, cs, ks, nil) {
			return
		}
	}
	subj := queueSubject(clientID, n.cfg.Node)
	f, err := n.mir.js.PublishAsync(subj, mustJSON(queueEntry{S: true, T: encodeTaken(taken)}), jetstream.WithStallWait(kvTimeout))
	if err != nil {
		n.log.Warn("cluster: session's stay start not written to the queue stream", "client_id", clientID, "err", err)
		return
	}
	if len(taken) > 0 {
		go n.noteMemoryAck(subj, f) // purged with the session's end
	}
}

// StartStay implements broker.StayMarker: a persistent session started
// empty here (its client's first connect here, or a clean start) begins
// a stay like one handed over or taken over.
func (n *Node) StartStay(clientID string) { n.markStay(clientID, nil) }

// flushRemovals writes the removals held back, one entry per session.
func (n *Node) flushRemovals() {
	n.mir.mu.Lock()
	defer n.mir.mu.Unlock()
	for id, rm := range n.mir.rm {
		for len(rm) > 0 {
			part := rm[:min(len(rm), entryChanges)]
			rm = rm[len(part):]
			cs := make([]queueChange, len(part))
			ks := make([]mirrorKey, len(part))
			for i, seq := range part {
				cs[i], ks[i] = queueChange{Seq: seq}, mirrorKey{k: seq}
			}
			if !n.sendEntry(id, cs, ks, nil) {
				return
			}
		}
	}
	clear(n.mir.rm)
	n.mir.rmCount = 0
}

func (n *Node) removeLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(removeEvery)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
			n.flushRemovals() // nothing to do when none wait
		}
	}
}

// mirrorFailed counts (a put) and logs, at most once a second, a change
// the stream did not confirm. A failed put marks the mirror dirty: the
// next resync writes the sessions' whole state again.
func (n *Node) mirrorFailed(put bool, err error) {
	if put {
		n.mir.failed.Add(1)
		n.mir.dirty.Store(true)
	}
	now := time.Now().UnixNano()
	if last := n.mir.logged.Load(); now-last >= int64(time.Second) && n.mir.logged.CompareAndSwap(last, now) {
		n.log.Warn("cluster: queued messages not replicated yet", "err", err)
	}
}

// resync writes every persistent session's deliveries again after puts
// failed (the stream was electing a leader, say): what they missed is
// replicated late rather than never.
func (n *Node) resync() {
	if !n.mir.dirty.Load() || !n.mir.syncing.CompareAndSwap(false, true) {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.mir.syncing.Store(false)
		n.mir.dirty.Store(false)
		n.retryRemovals()
		n.b.MirrorAll()
	}()
}

// loseRemovals notes the removals among keys, changes of clientID's
// session in an entry the stream did not confirm. Without them, a
// delivery its client had acknowledged (or completed, for QoS 2) stayed
// in the stream as it was last written, and the node that recovered the
// session after this one's loss sent it again: for QoS 2, under a packet
// ID the client had released, so taken as a new message. A lost put needs
// nothing here: the resync writes what the session still holds.
func (n *Node) loseRemovals(clientID string, keys []mirrorKey) {
	n.mir.lostMu.Lock()
	defer n.mir.lostMu.Unlock()
	for _, k := range keys {
		if k.put {
			continue
		}
		if n.mir.lost == nil {
			n.mir.lost = make(map[revKey]struct{})
		}
		n.mir.lost[revKey{clientID, k.k}] = struct{}{}
	}
}

// retryRemovals writes the lost removals again, those still the last
// change sent of their delivery (or inbound packet ID): one changed since
// (a delivery number used again by a later stay of the session, an ID
// received again) has a newer entry, which must stay the last. One
// forgotten since (goneFor) is dropped: what is older than it could
// otherwise come after it.
func (n *Node) retryRemovals() {
	n.mir.mu.Lock()
	defer n.mir.mu.Unlock()
	n.mir.lostMu.Lock()
	lost := n.mir.lost
	n.mir.lost = nil
	n.mir.lostMu.Unlock()
	released := make(map[string][]queueChange)
	for k := range lost {
		if l, ok := n.mir.last[k]; !ok || l.gone == 0 {
			continue
		}
		if k.k&inboundKey != 0 {
			released[k.id] = append(released[k.id], queueChange{In: uint16(k.k), Rel: true})
			continue
		}
		// With the removals held back, in the session's next entry or
		// the next flush.
		n.mir.rm[k.id] = append(n.mir.rm[k.id], k.k)
		n.mir.rmCount++
	}
	for id, cs := range released {
		ks := make([]mirrorKey, len(cs))
		for i, c := range cs {
			ks[i] = mirrorKey{k: inboundKey | uint64(c.In)}
		}
		if !n.sendEntry(id, cs, ks, nil) {
			return
		}
	}
}

// trackMirror learns each entry's stream sequence number, in the order
// the entries were sent, and purges what no longer matters: all of a
// session's entries once it has nothing left, and otherwise, every
// purgeEvery, those below its oldest delivery still held.
func (n *Node) trackMirror() {
	defer n.wg.Done()
	live := make(map[string]map[uint64]uint64) // subject -> delivery seq -> stream seq
	purged := make(map[string]uint64)
	// emptied are the subjects whose sessions came to hold nothing, and
	// the stream sequence their entries may be purged below: purged at
	// the next tick rather than at once, since each purge of a session
	// still here writes its memory first (memory.go), and a session that
	// keeps up empties after nearly every message.
	emptied := make(map[string]uint64)
	tick := time.NewTicker(purgeEvery)
	defer tick.Stop()
	timeout := time.NewTimer(kvTimeout)
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
			n.resync()
			n.pruneGone()
			for subj, below := range emptied {
				n.purgeQueued(subj, below)
			}
			clear(emptied)
			for subj, m := range live {
				low := uint64(0)
				for _, s := range m {
					if low == 0 || s < low {
						low = s
					}
				}
				if low > purged[subj] {
					purged[subj] = low
					n.purgeQueued(subj, low)
				}
			}
		case a := <-n.mir.acks:
			var ack *jetstream.PubAck
			timeout.Reset(mirrorAckTimeout + time.Second)
			select {
			case ack = <-a.f.Ok():
			case err := <-a.f.Err():
				n.mirrorFailed(true, err)
			case <-timeout.C:
				n.mirrorFailed(true, errors.New("no confirmation"))
			case <-n.ctx.Done():
				return
			}
			if a.batch != nil {
				if ack == nil {
					a.batch.bad.Store(true)
				}
				a.batch.settle()
			}
			if ack == nil {
				n.loseRemovals(a.id, a.keys)
			}
			m := live[a.subj]
			removed := false
			for _, k := range a.keys {
				switch {
				case !k.put:
					// A lost removal is written again by the next
					// resync (loseRemovals); meanwhile the delivery
					// no longer holds the purge back.
					delete(m, k.k)
					removed = true
				case ack != nil:
					if m == nil {
						m = make(map[uint64]uint64)
						live[a.subj] = m
					}
					m[k.k] = ack.Sequence
				default:
					// A lost put is written again by the next resync.
				}
			}
			if removed && len(m) == 0 {
				delete(live, a.subj)
				delete(purged, a.subj)
				if ack != nil {
					emptied[a.subj] = max(emptied[a.subj], ack.Sequence+1)
				}
			}
		}
	}
}

// purgeQueued asks for a subject's entries below stream sequence number
// below (all of them for 0) to be purged; requests coalesce.
func (n *Node) purgeQueued(subj string, below uint64) {
	n.mir.purgesMu.Lock()
	if old, ok := n.mir.purges[subj]; !ok || (old != 0 && (below == 0 || below > old)) {
		n.mir.purges[subj] = below
	}
	n.mir.purgesMu.Unlock()
	wake(n.mir.purgeCh)
}

func (n *Node) purgeLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.mir.purgeCh:
		}
		n.mir.purgesMu.Lock()
		todo := n.mir.purges
		n.mir.purges = make(map[string]uint64)
		n.mir.purgesMu.Unlock()
		s := n.queue()
		if s == nil {
			continue
		}
		stalled := false // a memory write failed: the stream is not taking writes
		for subj, below := range todo {
			if taken := n.memoryOf(subj); taken != nil {
				var mem uint64
				err := errors.New("an earlier memory write failed")
				if !stalled {
					ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
					mem, err = n.keepMemory(ctx, subj, taken)
					cancel()
				}
				if err != nil {
					// Purged without it, a replay would not know what
					// the purged entries delivered: kept, as a failed
					// purge is, and tried again with the next purge
					// asked for.
					stalled = true
					n.log.Debug("cluster: purge queued messages", "subject", subj, "err", err)
					n.mir.purgesMu.Lock()
					if _, ok := n.mir.purges[subj]; !ok {
						n.mir.purges[subj] = below
					}
					n.mir.purgesMu.Unlock()
					continue
				}
				if below == 0 || below > mem {
					below = mem // the memory just written stays
				}
			}
			opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(subj)}
			if below > 0 {
				opts = append(opts, jetstream.WithPurgeSequence(below))
			}
			ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
			if err := s.Purge(ctx, opts...); err != nil {
				// Left in the stream: a later purge of the subject
				// removes them, and they are harmless meanwhile.
				n.log.Debug("cluster: purge queued messages", "subject", subj, "err", err)
			} else {
				n.purgedMemory(subj, below)
			}
			cancel()
		}
	}
}

// loadQueued reads the deliveries node mirrored for clientID's session,
// in sequence order, and its QoS 2 packet IDs awaiting PUBREL.
// The IDs come with the names of their messages, where known.
func (n *Node) loadQueued(ctx context.Context, clientID, node string) ([]broker.SnapshotDelivery, map[uint16]session.Origin, error) {
	out, in, _, _, err := n.loadQueuedUpTo(ctx, clientID, node)
	return out, in, err
}

// loadQueuedUpTo is loadQueued that also returns the stream sequence of
// the last entry it read (0: none), and the names of the messages the
// stay's entries delivered, oldest first, removed ones too: the session
// took those, and its client has had the removed ones (the memory the
// session keeps on its node, session.Taken, as far as the stream has not
// purged it).
func (n *Node) loadQueuedUpTo(ctx context.Context, clientID, node string) ([]broker.SnapshotDelivery, map[uint16]session.Origin, uint64, []session.Origin, error) {
	s := n.queue()
	if s == nil {
		return nil, nil, 0, nil, errors.New("cluster: queue stream not open")
	}
	var last uint64
	subj := queueSubject(clientID, node)
	got := make(map[uint64]*broker.SnapshotDelivery)
	in := make(map[uint16]session.Origin)
	var taken []session.Origin
	seen := make(map[session.Origin]bool)
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, nil, 0, nil, fmt.Errorf("cluster: read queued messages of %q: %w", clientID, err)
		}
		last = m.Sequence
		var e queueEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			n.log.Warn("cluster: skipping an undecodable queued message", "client_id", clientID, "err", err)
		}
		if e.S {
			// An earlier stay's entries: its later changes (a PUBREC
			// state, a removal) may never have landed, and its
			// delivery numbers are not this stay's.
			clear(got)
			clear(in)
			clear(seen)
			taken = taken[:0]
		}
		for _, o := range decodeTaken(e.T) {
			// What the session took before the entries that delivered
			// it were purged (or before this stay began).
			if !seen[o] {
				seen[o] = true
				taken = append(taken, o)
			}
		}
		for _, c := range e.C {
			switch {
			case c.In != 0 && c.Rel:
				delete(in, c.In)
			case c.In != 0:
				var o session.Origin
				if c.O != nil {
					o = *c.O
				}
				in[c.In] = o
			case c.Out == nil:
				delete(got, c.Seq)
			default:
				got[c.Seq] = c.Out
				if o := session.Origin(c.Out.Msg.Origin); !o.IsZero() && !seen[o] {
					seen[o] = true
					taken = append(taken, o)
				}
			}
		}
		seq = m.Sequence + 1
	}
	seqs := make([]uint64, 0, len(got))
	for s := range got {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	out := make([]broker.SnapshotDelivery, 0, len(seqs))
	for _, s := range seqs {
		out = append(out, *got[s])
	}
	return out, in, last, taken, nil
}

// withQueued returns a lost node's session record with the deliveries
// that node mirrored for it, unless the session ends or starts clean.
func (n *Node) withQueued(s *broker.SessionSnapshot, lost string, clean bool) (*broker.SessionSnapshot, error) {
	cp, _, err := n.withQueuedUpTo(s, lost, clean)
	return cp, err
}

// withQueuedUpTo is withQueued that also returns the stream sequence of
// the last entry read (0: none).
func (n *Node) withQueuedUpTo(s *broker.SessionSnapshot, lost string, clean bool) (*broker.SessionSnapshot, uint64, error) {
	if s.Session.ExpiryInterval == 0 || clean {
		return s, 0, nil
	}
	ctx, cancel := context.WithTimeout(n.ctx, readyWait)
	defer cancel()
	out, in, last, taken, err := n.loadQueuedUpTo(ctx, s.Session.ClientID, lost)
	if err != nil {
		return nil, 0, err
	}
	cp := *s
	cp.Out, cp.Inbound, cp.InboundOrigins = out, nil, nil
	cp.Taken = append(slices.Clip(s.Taken), taken...)
	named := false
	for id, o := range in {
		cp.Inbound = append(cp.Inbound, id)
		cp.InboundOrigins = append(cp.InboundOrigins, o)
		named = named || !o.IsZero()
	}
	if !named {
		cp.InboundOrigins = nil
	}
	return &cp, last, nil
}
