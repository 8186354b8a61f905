package cluster

// Liveness and fencing. A NATS route says nothing about whether the node
// behind it works: a node frozen (SIGSTOP) or stalled keeps its TCP
// connections open. So every node publishes a heartbeat every beatEvery,
// naming the nodes it has heard within hearWithin, and every node keeps:
//
//   - its lease: it serves (accepts connects, acknowledges QoS 1/2
//     publishes, confirms and delivers messages from other nodes) only
//     while a majority of the cluster, itself included, has heard it:
//     within the last leaseFor it received, from enough peers, a heartbeat
//     naming it. A node cut off, or frozen and woken, finds its lease
//     lapsed by its own monotonic clock, before doing anything else;
//   - its peers' liveness: a node that none of the live nodes has heard
//     for deadAfter is lost, and the live node with the lowest name takes
//     its sessions over (by compare-and-set on the sessions bucket).
//
// hearWithin + leaseFor + a delivery delay < deadAfter: a node stops
// serving before the others may take its sessions (the last heartbeat
// naming it was sent at most hearWithin after they last heard it, and its
// lease ends leaseFor after that one arrived). A node whose lease lapsed is
// fenced: once it has its lease again it re-checks, by compare-and-set on
// each of its sessions' records, which sessions are still its own, evicts
// the others (closing their connections, publishing no will: the node
// that took them handled it), and only then serves again.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/session"
)

const (
	beatPrefix = "stl.beat." // stl.beat.<node>: heartbeats
	// beatEvery is how often a node sends its heartbeat.
	beatEvery = 250 * time.Millisecond
	// hearWithin: a heartbeat names the nodes heard within this.
	hearWithin = 500 * time.Millisecond
	// liveWithin: a peer heard within this counts as connected.
	liveWithin = time.Second
	// leaseFor: a node serves while a majority has heard it within this.
	leaseFor = 1500 * time.Millisecond
	// deadAfter is how long a node must be silent to every live node
	// before its sessions are taken over and its clients' wills published.
	deadAfter = 3 * time.Second
)

// lease is the node's view of who hears whom, and whether it may serve.
type lease struct {
	base time.Time // origin of the monotonic readings below

	until  atomic.Int64 // serving while mono() < until (and not fenced)
	fenced atomic.Bool  // lapsed: serving again once ownership is re-checked
	ready  atomic.Bool  // the node's replicated state is set up (n.ready)

	mu      sync.Mutex
	heard   map[string]int64           // peer -> when its last heartbeat arrived
	hears   map[string]map[string]bool // peer -> the nodes its last heartbeat named
	renewed map[string]int64           // peer -> when a heartbeat naming this node arrived
	batches map[string]bool            // peer -> its last heartbeat said it reads batches
	gen     uint64                     // lapses so far
	open    chan struct{}              // closed while not fenced
	lapsed  chan struct{}              // wakes fenceLoop

	evicted atomic.Uint64 // sessions evicted after a lapse

	// batchUntil: the outbox may send batches while mono() < batchUntil
	// (batch.go): every peer has said it reads them, recently enough.
	batchUntil atomic.Int64
	// oldWire, set by tests before Run, makes the node act as a release
	// before batches: it does not say it reads them, drops those it gets
	// and sends none.
	oldWire bool
}

func (l *lease) init() {
	l.base = time.Now()
	l.heard = make(map[string]int64)
	l.hears = make(map[string]map[string]bool)
	l.renewed = make(map[string]int64)
	l.batches = make(map[string]bool)
	l.open = make(chan struct{})
	close(l.open)
	l.lapsed = make(chan struct{}, 1)
}

func (l *lease) mono() int64 { return int64(time.Since(l.base)) }

// quorumPeers is how many peers must hear this node for it to serve.
func (n *Node) quorumPeers() int { return (len(n.cfg.Peers) + 1) / 2 }

// leaseValid reports whether the node may serve now. Cheap: two atomic
// loads and a clock reading.
func (n *Node) leaseValid() bool {
	if n.quorumPeers() == 0 {
		return true
	}
	until := n.lease.until.Load() // before fenced: see heardBeat
	return !n.lease.fenced.Load() && n.lease.mono() < until
}

// serving reports whether the node can serve clients now: its replicated
// state is set up and it holds its lease.
func (n *Node) serving() bool { return n.lease.ready.Load() && n.leaseValid() }

// fenceGate returns nil if the node serves, or a channel closed once it
// serves again (never, for a session it turns out to have lost: that
// session's connection is closed instead). Only a node that was ready is
// fenced: one still starting refuses connects anyway.
func (n *Node) fenceGate() <-chan struct{} {
	if !n.lease.ready.Load() || n.leaseValid() {
		return nil
	}
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	if !n.lease.fenced.Load() {
		if n.lease.mono() < n.lease.until.Load() {
			return nil // renewed meanwhile
		}
		n.lapseLocked()
	}
	return n.lease.open
}

// lapseLocked fences the node; the caller holds lease.mu.
func (n *Node) lapseLocked() {
	n.lease.fenced.Store(true)
	n.lease.gen++
	n.lease.open = make(chan struct{})
	wake(n.lease.lapsed)
}

// Fence returns nil while the node serves, or a channel closed once it
// serves again (broker.Fencer).
func (n *Node) Fence() <-chan struct{} {
	if !n.started.Load() {
		return nil
	}
	return n.fenceGate()
}

// waitServing blocks while the node is fenced; false once ctx is done.
func (n *Node) waitServing(ctx context.Context) bool {
	for {
		g := n.fenceGate()
		if g == nil {
			return true
		}
		select {
		case <-g:
		case <-ctx.Done():
			return false
		}
	}
}

// beatLoop sends this node's heartbeats.
func (n *Node) beatLoop() {
	defer n.wg.Done()
	subj := beatPrefix + key(n.cfg.Node)
	tick := time.NewTicker(beatEvery)
	defer tick.Stop()
	for {
		if !n.muted.Load() {
			n.bc.Publish(subj, n.beat())
		}
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		n.checkLease()
	}
}

// beat is this node's heartbeat: its name, the nodes it heard within
// hearWithin, one a line, then featuresLine (batch.go). A release before
// batches reads the first line as the sender and the others as the nodes
// it hears.
func (n *Node) beat() []byte {
	now := n.lease.mono()
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	var b strings.Builder
	b.WriteString(n.cfg.Node)
	for p, at := range n.lease.heard {
		if now-at < int64(hearWithin) {
			b.WriteByte('\n')
			b.WriteString(p)
		}
	}
	if !n.lease.oldWire {
		b.WriteString("\n" + featuresLine)
	}
	return []byte(b.String())
}

// checkLease fences the node once its lease has run out without any
// heartbeat arriving to notice (cut off from every other node).
func (n *Node) checkLease() {
	if n.lease.ready.Load() && !n.leaseValid() {
		n.fenceGate()
	}
}

// heardBeat takes a heartbeat: the sender, then the nodes it hears (and
// featuresLine, from a release that batches).
func (n *Node) heardBeat(msg *nats.Msg) {
	if n.muted.Load() {
		return
	}
	names := strings.Split(string(msg.Data), "\n")
	from := names[0]
	if from == "" || from == n.cfg.Node {
		return
	}
	hears := make(map[string]bool, len(names)-1)
	batches := false
	for _, h := range names[1:] {
		if h == featuresLine && !n.lease.oldWire { // a release before batches reads it as a name
			batches = true
			continue
		}
		hears[h] = true
	}
	now := n.lease.mono()
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	n.lease.heard[from] = now
	n.lease.hears[from] = hears
	n.lease.batches[from] = batches
	n.batchVerdictLocked(now)
	if !hears[n.cfg.Node] {
		return
	}
	n.lease.renewed[from] = now
	q := n.quorumPeers()
	if q == 0 || len(n.lease.renewed) < q {
		return
	}
	times := make([]int64, 0, len(n.lease.renewed))
	for _, at := range n.lease.renewed {
		times = append(times, at)
	}
	slices.Sort(times)
	until := times[len(times)-q] + int64(leaseFor)
	if until <= n.lease.until.Load() {
		return
	}
	if n.lease.ready.Load() && !n.lease.fenced.Load() && now >= n.lease.until.Load() {
		// The lease ran out before this renewal (a freeze, a cut): the
		// node may have been declared lost meanwhile. Fenced before the
		// new lease is visible (leaseValid reads until first).
		n.lapseLocked()
	}
	n.lease.until.Store(until)
}

// livePeers lists the peers heard within liveWithin.
func (n *Node) livePeers() []string {
	now := n.lease.mono()
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	var out []string
	for p, at := range n.lease.heard {
		if now-at < int64(liveWithin) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// silent lists the peers no live node has heard for deadAfter: this node
// has not, and the latest heartbeat of every other live peer does not
// name them. A node heard by some live node is not lost, even if this one
// cannot reach it (a partial partition): it keeps its lease through that
// node.
func (n *Node) silent() []string {
	now := n.lease.mono()
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	var out []string
	for p, at := range n.lease.heard {
		if now-at < int64(deadAfter) {
			continue
		}
		heardElsewhere := false
		for q, qat := range n.lease.heard {
			if q != p && now-qat < int64(liveWithin) && n.lease.hears[q][p] {
				heardElsewhere = true
			}
		}
		if !heardElsewhere {
			out = append(out, p)
		}
	}
	return out
}

// heardRecently reports whether peer's heartbeat arrived within liveWithin.
func (n *Node) heardRecently(peer string) bool {
	now := n.lease.mono()
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	at, ok := n.lease.heard[peer]
	return ok && now-at < int64(liveWithin)
}

// fenceLoop lifts the fence: once the node holds its lease again, it
// checks each of its sessions against the sessions bucket, evicts those
// another node took, and serves again.
func (n *Node) fenceLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.lease.lapsed:
		}
		n.log.Warn("cluster: out of touch with the majority of the nodes: not serving until back and its sessions re-checked")
		for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
			n.lease.mu.Lock()
			gen := n.lease.gen
			n.lease.mu.Unlock()
			if n.lease.mono() < n.lease.until.Load() {
				if evicted, err := n.recheckSessions(); err != nil {
					n.log.Debug("cluster: re-checking sessions after a lapse, will retry", "err", err)
				} else {
					n.lease.mu.Lock()
					if gen == n.lease.gen && n.lease.mono() < n.lease.until.Load() {
						n.lease.fenced.Store(false)
						close(n.lease.open)
						n.lease.mu.Unlock()
						n.log.Warn("cluster: back in touch with the majority of the nodes; serving again", "sessions_evicted", evicted)
						break
					}
					n.lease.mu.Unlock()
				}
			}
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}
}

// recheckSessions confirms, by compare-and-set, that each session this
// node holds is still its own, and evicts those that are not.
//
// Every session is checked before any is evicted: the QoS 2 messages of
// an evicted publisher that were not sent yet are doomed first (later.go),
// so that no evicted session carries them to its new node.
func (n *Node) recheckSessions() (evicted int, err error) {
	owners := make(map[string]string) // the sessions taken over: their owner ("" if none)
	var order []string
	for _, id := range n.b.SessionIDs() {
		mine, owner, err := n.confirmOwner(id)
		if err != nil {
			return 0, err
		}
		if !mine {
			owners[id] = owner
			order = append(order, id)
		}
	}
	gone := make(map[string]bool, len(order))
	for _, id := range order {
		gone[id] = true
	}
	doomed := n.later.doom(gone)
	// Only what the stream holds now is purged: the purge runs later, and
	// an evicted session may come back meanwhile (its client reconnects
	// here and the node claims it back), whose new entries on the same
	// subject must stay. Purged whole, they were lost, and with them the
	// session's record of what its client had received.
	below := uint64(0)
	if len(order) > 0 {
		below = n.queueEnd()
	}
	for _, id := range order {
		owner := owners[id]
		n.log.Info("cluster: session taken over by another node while this one was out of touch", "client_id", id, "owner", owner)
		held := withoutDoomed(n.b.EvictSession(id), doomed)
		if owner != "" && len(held) > 0 {
			// Before serving again (which releases the held
			// acknowledgements of what they carry): to the session
			// where it is now, which takes what it lacks.
			n.sendEvicted(owner, id, held)
		}
		n.purgeQueued(queueSubject(id, n.cfg.Node), below)
		evicted++
		n.lease.evicted.Add(1)
	}
	if len(doomed) > 0 {
		n.log.Info("cluster: QoS 2 messages of publishers taken over while out of touch dropped here: their clients resend them where their sessions went",
			"messages", len(doomed))
	}
	return evicted, nil
}

// queueEnd returns the queue stream's next sequence number, 0 (all) if
// it cannot be read.
func (n *Node) queueEnd() uint64 {
	s := n.queue()
	if s == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		n.log.Debug("cluster: queue stream's end unknown; purging evicted sessions' entries whole", "err", err)
		return 0
	}
	return info.State.LastSeq + 1
}

// confirmOwner reports whether the sessions bucket names this node as
// clientID's owner, rewriting the record unchanged at its revision: a
// takeover that read the record before fails its own compare-and-set.
//
// A session that is not its own any more has its owner noted at once
// (owner, "" if its record is gone): what this node publishes once it
// serves again goes to the session where it is, rather than to no one
// until the bucket's echo arrives.
func (n *Node) confirmOwner(clientID string) (mine bool, owner string, err error) {
	var refused uint64
	for range 5 {
		ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
		e, err := n.readRecord(ctx, clientID, refused)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			cancel()
			return false, "", nil // its record deleted: taken over (or ended)
		}
		if err == nil {
			var r record
			if json.Unmarshal(e.Value(), &r) != nil || r.Node != n.cfg.Node {
				cancel()
				if r.Node != "" && r.Node != n.cfg.Node {
					n.noteOwner(key(clientID), e.Revision(), r)
				}
				return false, r.Node, nil
			}
			_, err = n.sessions.Update(ctx, key(clientID), e.Value(), e.Revision())
		}
		cancel()
		if err == nil {
			return true, "", nil
		}
		if !isRevisionMismatch(err) {
			return false, "", err
		}
		refused = e.Revision()
	}
	return false, "", errors.New("record contended")
}

// evictedPatience bounds how long an evicted session's deliveries may
// take to reach the relay stream, all together (each is tried at least
// briefly): the node serves again only after.
const evictedPatience = 10 * time.Second

// sendEvicted relays the deliveries an evicted session held to its
// owner's relay subject, each under its name: the owner recovered from
// the queue stream those that reached it, and the session there skips
// them; the others (queued here while the stream was out of reach) it
// takes. Bounded: a relay write given up is logged.
func (n *Node) sendEvicted(owner, clientID string, held []broker.SnapshotDelivery) {
	deadline := time.Now().Add(evictedPatience)
	for i := range held {
		d := &held[i]
		m := &session.Message{Topic: d.Msg.Topic, Payload: d.Msg.Payload, QoS: d.Msg.QoS, Retain: d.Msg.Retain,
			Props: d.Msg.Props, Expiry: d.Msg.Expiry, Publisher: d.Msg.Publisher, Origin: session.Origin(d.Msg.Origin)}
		n.pubMu.Lock()
		n.seq++
		seq := n.seq
		n.pubMu.Unlock()
		data, err := encodeMessage(nil, header{n.instance, seq}, m)
		if err == nil {
			err = n.relayTo(owner, data, []string{clientID}, fmt.Sprintf("e-%016x-%d", n.instance, seq),
				max(time.Until(deadline), 200*time.Millisecond))
		}
		if err != nil {
			n.log.Warn("cluster: a message of a session taken over while this node was out of touch could not follow it",
				"client_id", clientID, "owner", owner, "topic", m.Topic, "err", err)
		}
	}
}
