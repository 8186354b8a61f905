package cluster

// Routing between nodes: a node subscribes on NATS to the subjects its
// clients' filters need (interest), forwards what its clients publish, and
// receives other nodes' messages in batches.

import (
	"slices"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/starling-mqtt/starling/internal/session"
)

// HasInterest reports whether any node (this one included) subscribes to
// topic name, as far as this node knows.
func (n *Node) HasInterest(name string) bool {
	return n.started.Load() && n.acct.SubscriptionInterest(n.subject(name))
}

// Forward publishes m to the nodes that subscribe to it. A QoS 1/2
// message that persistent sessions on other nodes must get asks their
// nodes to confirm it; the returned channel is closed once they have, or
// it was relayed to them through the stream (relay.go).
func (n *Node) Forward(m *session.Message) (bool, <-chan struct{}) {
	if !n.started.Load() {
		return false, nil // restoring: no other node is there to have it
	}
	seq := n.name(m)
	subj := n.subject(m.Topic)
	targets := n.targetsOf(m)
	f := n.send(m, seq, subj, targets)
	remote := n.acct.SubscriptionInterest(subj) || len(targets) > 0
	var fence <-chan struct{}
	if m.QoS > 0 {
		// A fenced node acknowledges nothing (its PUBACK, and the
		// publish's deliveries here, wait) until it is sure which
		// sessions are still its own; a publisher whose session was
		// taken meanwhile has its connection closed instead.
		fence = n.fenceGate()
	}
	var done <-chan struct{}
	if f != nil {
		done = f.done
	}
	if m.QoS > 0 {
		// Sessions elsewhere full (pause.go): the acknowledgement waits
		// for their room.
		done = join(done, n.pause.wait(m.Topic))
	}
	if arriving := n.stash(m); arriving != nil {
		// For a session being claimed here (arrive.go).
		remote = true
		if done == nil {
			done = arriving
		} else {
			done = both(done, arriving)
		}
	}
	switch {
	case fence == nil:
		return remote, done
	case done == nil:
		return remote, fence
	}
	return remote, both(fence, done)
}

// ForwardLater is Forward for a QoS 2 message from a client, which must
// not leave this node before its packet ID is replicated: a publisher
// that resends it to another node after losing this one then finds it
// received there, and it is not routed twice under two names. m is
// named now; send, called once the publish's operation is committed,
// publishes it (ok false: the operation failed, nothing is sent). A
// message whose packet ID the stream did not confirm (replicated false),
// or that is sent while the node is fenced, is sent once the node serves
// again, and only if its publisher's session is still here. If another
// node took the session over, the publisher resends there: that node
// routes the message again under this name if the packet ID reached the
// stream with it (session.Session.TakeReplay), and as a new message if
// it did not; either way each session takes it once.
func (n *Node) ForwardLater(m *session.Message) (remote bool, safe <-chan struct{}, send func(ok, replicated bool)) {
	if !n.started.Load() {
		return false, nil, func(bool, bool) {}
	}
	seq := n.name(m)
	subj := n.subject(m.Topic)
	targets := n.targetsOf(m)
	remote = n.acct.SubscriptionInterest(subj) || len(targets) > 0
	inc, _ := n.b.SessionIncarnation(m.Publisher)
	n.later.add(m)
	done := make(chan struct{})
	var once sync.Once
	finish := func(f *forwarded) {
		if f != nil {
			<-f.done
		}
		once.Do(func() { close(done) })
	}
	send = func(ok, replicated bool) {
		switch {
		case !ok:
			n.later.take(m.Origin)
			finish(nil)
		case replicated && n.fenceGate() == nil:
			// Not fenced: the publisher's session is this node's (a node
			// woken from a freeze finds its lease lapsed at once, and
			// takes the way below), unless it was evicted since the
			// commit: the stream's confirmation came after the node that
			// took the session over had read it (doomed, later.go).
			if !n.later.take(m.Origin) {
				n.log.Info("cluster: QoS 2 message not forwarded: its publisher's session was taken over while this node was out of touch",
					"client_id", m.Publisher, "topic", m.Topic)
				finish(nil)
			} else if f := n.send(m, seq, subj, targets); f != nil {
				go finish(f)
			} else {
				finish(nil)
			}
		default:
			go func() {
				if n.waitServing(n.ctx) && n.sameSession(m.Publisher, inc) && n.later.take(m.Origin) {
					finish(n.send(m, seq, subj, targets))
					return
				}
				n.later.take(m.Origin) // forgotten, whichever check refused it
				n.log.Info("cluster: QoS 2 message not forwarded: its publisher's session left this node before its packet ID was replicated",
					"client_id", m.Publisher, "topic", m.Topic)
				finish(nil)
			}()
		}
	}
	safe = join(done, n.pause.wait(m.Topic)) // pause.go
	if arriving := n.stash(m); arriving != nil {
		// For a session being claimed here (arrive.go).
		remote = true
		safe = both(safe, arriving)
	}
	if fence := n.fenceGate(); fence != nil {
		safe = both(fence, safe)
	}
	return remote, safe, send
}

// sameSession reports whether this node still holds incarnation inc of
// clientID's session.
func (n *Node) sameSession(clientID string, inc uint64) bool {
	now, ok := n.b.SessionIncarnation(clientID)
	return ok && now == inc
}

// name gives m its origin: this node's run and the next sequence number.
func (n *Node) name(m *session.Message) uint64 {
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	n.seq++
	// The message's name on every node and path it takes (the broker
	// routes it locally after naming). A message routed again under the
	// name another node gave it (a QoS 2 resend, session.TakeReplay)
	// keeps it.
	if m.Origin.IsZero() {
		m.Origin = session.Origin{Instance: n.instance, Seq: n.seq}
	}
	return n.seq
}

// targetsOf lists the persistent sessions on other nodes m must reach.
func (n *Node) targetsOf(m *session.Message) map[string][]string {
	if m.QoS > 0 && n.rel.js.Load() != nil {
		return n.persistentTargets(m)
	}
	return nil
}

// send queues m, named seq, for subj (published by the outbox, batch.go);
// with targets, it asks their nodes to confirm and returns what waits for
// them.
func (n *Node) send(m *session.Message, seq uint64, subj string, targets map[string][]string) *forwarded {
	var msg *nats.Msg
	if targets != nil {
		// Built outside the outbox's lock, which every publish on the node
		// waits for.
		msg = nats.NewMsg(subj)
		msg.Reply = n.rel.self
		size := 0
		for node, ids := range targets {
			prefix := strconv.Itoa(len(msg.Header[hdrConfirm])) + "."
			msg.Header[hdrConfirm] = append(msg.Header[hdrConfirm], node)
			for _, id := range ids {
				if size += len(id)*4/3 + 8; size <= maxForBytes {
					msg.Header[hdrFor] = append(msg.Header[hdrFor], prefix+key(id))
				}
			}
		}
		if size > maxForBytes {
			delete(msg.Header, hdrFor) // all or none: a partial list would confirm too much
		}
	}
	return n.enqueue(m, seq, subj, targets, msg)
}

// both is closed once a and b are.
func both(a, b <-chan struct{}) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		<-a
		<-b
		close(c)
	}()
	return c
}

// Interest queues a subscription change for the interest loop; the broker
// calls it under its index lock.
func (n *Node) Interest(group, filter string, on bool) {
	n.interestMu.Lock()
	n.interestOps = append(n.interestOps, interestOp{interestKey{group, filter}, on})
	n.interestMu.Unlock()
	wake(n.interestSignal)
}

func (n *Node) interestLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.interestSignal:
		}
		n.interestMu.Lock()
		ops := n.interestOps
		n.interestOps = nil
		n.interestMu.Unlock()
		for _, op := range ops {
			n.applyInterest(op)
		}
	}
}

func (n *Node) applyInterest(op interestOp) {
	n.subsMu.Lock()
	defer n.subsMu.Unlock()
	if !op.on {
		for _, s := range n.interestSubs[op.interestKey] {
			if d, err := s.Dropped(); err == nil {
				n.gone += uint64(d)
			}
			s.Unsubscribe()
		}
		delete(n.interestSubs, op.interestKey)
		return
	}
	if _, ok := n.interestSubs[op.interestKey]; ok {
		return
	}
	var subs []*nats.Subscription
	for _, subj := range filterSubjects(op.filter) {
		var s *nats.Subscription
		var err error
		if op.group == "" {
			// A full channel drops (and counts) what arrives: the
			// channel is the pending limit.
			s, err = n.sc.ChanSubscribe(subj, n.plain)
		} else {
			g, f := op.group, op.filter
			// One queue group per share group and filter across the
			// cluster: NATS picks the node, the node picks the member.
			s, err = n.sc.QueueSubscribe(subj, "share-"+key(g+"\x00"+f), func(msg *nats.Msg) {
				if !n.waitServing(n.ctx) || n.dropsBatch(msg) {
					return
				}
				var nm wireNames
				forEachEncoded(msg.Data, func(e []byte) {
					if _, m, err := decodeCached(e, &nm); err == nil {
						n.b.InjectShared(m, g, f)
					}
				})
			})
			if err == nil {
				err = s.SetPendingLimits(plainQueue, shareQueueBytes)
			}
		}
		if err != nil {
			n.log.Warn("cluster: subscribe failed", "filter", op.filter, "group", op.group, "err", err)
			continue
		}
		subs = append(subs, s)
	}
	n.interestSubs[op.interestKey] = subs
}

// Dropped counts the messages from other nodes that NATS dropped because
// this node fell behind (slow consumer).
func (n *Node) Dropped() uint64 {
	n.subsMu.Lock()
	defer n.subsMu.Unlock()
	total := n.gone
	for _, subs := range n.interestSubs {
		for _, s := range subs {
			if d, err := s.Dropped(); err == nil {
				total += uint64(d)
			}
		}
	}
	return total
}

// receiveLoop delivers messages from other nodes to local subscribers. A
// message matching several of this node's filters arrives once per filter,
// the copies one after the other; the sender's sequence number drops the
// repeats.
func (n *Node) receiveLoop() {
	defer n.wg.Done()
	last := make(map[uint64]uint64)
	var batch []*session.Message
	// Confirmations asked of this node for messages in the batch: sent
	// once the batch is stored (and replicated).
	var replies []string
	var seqs []uint64
	// Hand-overs committed before confirmsFor looked at the batch's
	// sessions: if one commits before the batch is routed, a session
	// confirmed for may have left, and the batch confirms nothing (the
	// senders relay it instead).
	var moves uint64
	// Messages of the batch routed to persistent sessions here that their
	// sender may relay too (seen.go).
	var routedHere []origin
	// Per message of the batch: whether its routing must be watched (it
	// is confirmed, or routed to persistent sessions here that its
	// sender may relay it to as well), its index in replies (-1: not
	// confirmed), and its name.
	var asked []bool
	var replyOf []int
	var names []origin
	var nm wireNames // the strings of the message decoded before, shared by the next
	take := func(msg *nats.Msg) {
		if n.dropsBatch(msg) {
			return
		}
		if len(batch) == 0 {
			moves = n.b.MovesCommitted()
		}
		// A batch (batch.go) is named by its last message.
		h, ok := lastName(msg.Data)
		if !ok {
			n.log.Warn("cluster: dropping undecodable message", "subject", msg.Subject)
			return
		}
		if h.instance == n.instance {
			return // delivered locally when published
		}
		if s, ok := last[h.instance]; ok && h.seq == s {
			// Another filter's copy of the message just taken (a node
			// sends a QoS 2 message only once its packet ID is
			// replicated, so sequence numbers may arrive out of order).
			return
		}
		if len(last) > 1024 {
			clear(last) // instances of restarted nodes pile up otherwise
		}
		last[h.instance] = h.seq
		if n.stopping.Load() {
			if _, _, asked := n.heldFor(msg); asked {
				// Its sender relays it, this node confirming nothing
				// now: delivered here too, it would reach the session
				// twice (the memory of direct routings does not
				// survive the restart, nor go with a hand-over).
				return
			}
		}
		// Only a message sent alone carries confirmation headers.
		confirm, held := n.confirmsFor(msg)
		err := forEachEncoded(msg.Data, func(e []byte) {
			h, m, err := decodeCached(e, &nm)
			if err != nil {
				n.log.Warn("cluster: dropping undecodable message", "subject", msg.Subject, "err", err)
				return
			}
			batch = append(batch, m)
			names = append(names, origin{h.instance, h.seq})
			asked = append(asked, confirm || len(held) > 0)
			if confirm {
				replyOf = append(replyOf, len(replies))
				replies, seqs = append(replies, msg.Reply), append(seqs, h.seq)
			} else {
				replyOf = append(replyOf, -1)
			}
			if len(held) > 0 {
				o := origin{h.instance, h.seq}
				n.direct.routing(o, held)
				routedHere = append(routedHere, o)
			}
		})
		if err != nil {
			n.log.Warn("cluster: dropping the rest of an undecodable batch", "subject", msg.Subject, "err", err)
		}
	}
	for {
		select {
		case <-n.ctx.Done():
			return
		case msg := <-n.plain:
			take(msg)
		}
		// Whatever else has arrived goes in the same operation.
	more:
		for len(batch) < maxBatch {
			select {
			case msg := <-n.plain:
				take(msg)
			default:
				break more
			}
		}
		if len(batch) > 0 {
			// Fenced: held (and, past the queue, dropped by NATS and
			// relayed by their senders) until the node serves again.
			if !n.waitServing(n.ctx) {
				return
			}
			stored, replicated, routed, rooms, full := n.b.InjectBatch(batch, asked)
			if len(full) > 0 {
				n.watchFull(full) // pause.go
			}
			if len(routedHere) > 0 {
				// A message a session here dropped (past its hard
				// limit) is not confirmed: its relayed copy must reach
				// that session.
				if rooms != nil {
					routedHere = slices.DeleteFunc(routedHere, func(o origin) bool {
						i := slices.Index(names, o)
						if i >= 0 && rooms[i] != nil && rooms[i].Overflow {
							n.direct.routed([]origin{o}, false)
							return true
						}
						return false
					})
				}
				n.direct.routed(routedHere, stored && routed == moves)
				routedHere = routedHere[:0]
			}
			// Stopping since the batch was taken: its senders relay it
			// (BeginShutdown).
			if stored && replicated && routed == moves && len(replies) > 0 && !n.stopping.Load() {
				if rooms == nil {
					n.confirm(replies, seqs)
				} else {
					n.confirmRooms(replies, seqs, replyOf, rooms)
				}
			}
			clear(batch)
			batch = batch[:0]
			clear(replies)
			replies, seqs = replies[:0], seqs[:0]
			asked, replyOf, names = asked[:0], replyOf[:0], names[:0]
		}
	}
}

// dropsBatch reports whether msg is a batch this node drops: in tests, as
// a release before batches (lease.oldWire) did, an unknown version.
func (n *Node) dropsBatch(msg *nats.Msg) bool {
	if !n.lease.oldWire || !isBatch(msg.Data) {
		return false
	}
	n.log.Warn("cluster: dropping undecodable message", "subject", msg.Subject)
	return true
}

// maxBatch bounds the messages delivered in one broker operation.
const maxBatch = 256
