package cluster

// Routing between nodes: a node subscribes on NATS to the subjects its
// clients' filters need (interest), forwards what its clients publish, and
// receives other nodes' messages in batches.

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/starling-mqtt/starling/internal/session"
)

// HasInterest reports whether any node (this one included) subscribes to
// topic name, as far as this node knows.
func (n *Node) HasInterest(name string) bool {
	return n.started.Load() && n.acct.SubscriptionInterest(topicSubject(name))
}

// Forward publishes m to the nodes that subscribe to it. A QoS 1/2
// message that persistent sessions on other nodes must get asks their
// nodes to confirm it; the returned channel is closed once they have, or
// it was relayed to them through the stream (relay.go).
func (n *Node) Forward(m *session.Message) (bool, <-chan struct{}) {
	if !n.started.Load() {
		return false, nil // restoring: no other node is there to have it
	}
	subj := topicSubject(m.Topic)
	var targets map[string][]string
	if m.QoS > 0 && n.rel.js.Load() != nil {
		targets = n.persistentTargets(m)
	}
	var msg *nats.Msg
	if targets != nil {
		// Built outside pubMu, which every publish on the node waits for.
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
	var f *forwarded
	n.pubMu.Lock()
	n.seq++
	// The message's name on every node and path it takes (the broker
	// routes it locally after Forward returns).
	m.Origin = session.Origin{Instance: n.instance, Seq: n.seq}
	buf, err := encodeMessage(n.buf[:0], header{n.instance, n.seq}, m)
	if err == nil {
		if msg == nil {
			err = n.pc.Publish(subj, buf)
		} else {
			f = n.expect(n.seq, buf, targets)
			msg.Data = buf
			err = n.pc.PublishMsg(msg)
		}
	}
	if cap(buf) <= 64<<10 {
		n.buf = buf[:0]
	}
	n.pubMu.Unlock()
	if err != nil {
		n.log.Warn("cluster: forward failed", "topic", m.Topic, "err", err)
		if f == nil {
			return false, nil
		}
		// The confirmations will not come: relayed at the next look.
		n.rel.mu.Lock()
		f.at = time.Time{}
		n.rel.mu.Unlock()
	}
	remote := n.acct.SubscriptionInterest(subj)
	var fence <-chan struct{}
	if m.QoS > 0 {
		// A fenced node acknowledges nothing (its PUBACK, and the
		// publish's deliveries here, wait) until it is sure which
		// sessions are still its own; a publisher whose session was
		// taken meanwhile has its connection closed instead.
		fence = n.fenceGate()
	}
	switch {
	case f == nil && fence == nil:
		return remote, nil
	case f == nil:
		return remote, fence
	case fence == nil:
		return remote || len(targets) > 0, f.done
	}
	return remote || len(targets) > 0, both(fence, f.done)
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
	n.imu.Lock()
	n.iq = append(n.iq, interestOp{interestKey{group, filter}, on})
	n.imu.Unlock()
	wake(n.isig)
}

func (n *Node) interestLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.isig:
		}
		n.imu.Lock()
		ops := n.iq
		n.iq = nil
		n.imu.Unlock()
		for _, op := range ops {
			n.applyInterest(op)
		}
	}
}

func (n *Node) applyInterest(op interestOp) {
	n.smu.Lock()
	defer n.smu.Unlock()
	if !op.on {
		for _, s := range n.isubs[op.interestKey] {
			if d, err := s.Dropped(); err == nil {
				n.gone += uint64(d)
			}
			s.Unsubscribe()
		}
		delete(n.isubs, op.interestKey)
		return
	}
	if _, ok := n.isubs[op.interestKey]; ok {
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
				if !n.waitServing(n.ctx) {
					return
				}
				if _, m, err := decodeMessage(msg.Data); err == nil {
					n.b.InjectShared(m, g, f)
				}
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
	n.isubs[op.interestKey] = subs
}

// Dropped counts the messages from other nodes that NATS dropped because
// this node fell behind (slow consumer).
func (n *Node) Dropped() uint64 {
	n.smu.Lock()
	defer n.smu.Unlock()
	total := n.gone
	for _, subs := range n.isubs {
		for _, s := range subs {
			if d, err := s.Dropped(); err == nil {
				total += uint64(d)
			}
		}
	}
	return total
}

// receiveLoop delivers messages from other nodes to local subscribers. A
// message matching several of this node's filters arrives once per filter;
// sequence numbers, which increase per sending node, drop the repeats.
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
	take := func(msg *nats.Msg) {
		if len(batch) == 0 {
			moves = n.b.MovesCommitted()
		}
		h, m, err := decodeMessage(msg.Data)
		if err != nil {
			n.log.Warn("cluster: dropping undecodable message", "subject", msg.Subject, "err", err)
			return
		}
		if h.instance == n.instance {
			return // delivered locally when published
		}
		if s, ok := last[h.instance]; ok && h.seq <= s {
			return
		}
		if len(last) > 1024 {
			clear(last) // instances of restarted nodes pile up otherwise
		}
		last[h.instance] = h.seq
		batch = append(batch, m)
		confirm, held := n.confirmsFor(msg)
		if confirm {
			replies, seqs = append(replies, msg.Reply), append(seqs, h.seq)
		}
		if len(held) > 0 {
			o := origin{h.instance, h.seq}
			n.direct.routing(o, held)
			routedHere = append(routedHere, o)
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
			stored, replicated, routed := n.b.InjectBatch(batch)
			if len(routedHere) > 0 {
				n.direct.routed(routedHere, stored && routed == moves)
				routedHere = routedHere[:0]
			}
			if stored && replicated && routed == moves && len(replies) > 0 {
				n.confirm(replies, seqs)
			}
			clear(batch)
			batch = batch[:0]
			clear(replies)
			replies, seqs = replies[:0], seqs[:0]
		}
	}
}

// maxBatch bounds the messages delivered in one broker operation.
const maxBatch = 256
