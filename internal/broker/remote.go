package broker

// Flow control across the cluster (docs/flow-control.md). A QoS 1/2
// message from another node whose sender waits for this node's
// confirmation (it is for persistent sessions here) holds its publisher
// on that node as a local publish would: the deliveries that find their
// session full are kept past its bound (Delivery.Held), and the
// confirmation waits (Room) until those sessions have room again or met
// the slow-consumer policy. A delivery that is dropped all the same (past
// the hard limit) is reported, and the message is not confirmed: its
// sender relays it through the stream, whose consumer offers it again
// later instead of dropping it (InjectRelayed).

import (
	"slices"
	"time"

	"github.com/starling-mqtt/starling/internal/session"
)

// remoteRoute is what routing one message from another node found.
type remoteRoute struct {
	// noHold: nobody can be held for it (a relayed message's publisher
	// has its acknowledgement already).
	noHold bool
	// overflow are the persistent sessions that dropped it, past their
	// hard limit.
	overflow []*client
}

// Room is what this node's confirmation of a message from another node
// waits for: room in the sessions the message found full.
type Room struct {
	b  *Broker
	on []*client
	// Overflow is set when a persistent session here dropped the message
	// past its hard limit: it must not be confirmed (its sender relays it,
	// and the relayed copy waits for room in the stream).
	Overflow bool
}

// Wait waits until every session of r has room again, or met the
// slow-consumer policy, calling tick every interval meanwhile. It reports
// false if done was closed first.
func (r *Room) Wait(done <-chan struct{}, every time.Duration, tick func()) bool {
	if len(r.on) == 0 {
		return true
	}
	r.b.Flow.Holds.Add(1)
	start := r.b.now()
	defer func() { r.b.Flow.HeldNanos.Add(int64(r.b.now().Sub(start))) }()
	for len(r.on) > 0 {
		kick := make(chan struct{})
		t := time.AfterFunc(every, func() { close(kick) })
		res := r.b.waitRoom(r.on[0], kick, done)
		t.Stop()
		switch res {
		case roomGone:
			return false
		case roomKicked:
			tick()
			continue
		}
		r.on = r.on[1:]
	}
	return true
}

// InjectBatch delivers messages that other nodes received to the local
// subscribers (not to $share groups, which get theirs by InjectShared),
// without forwarding them again, in one operation: one store commit
// covers them all, so a busy backplane does not wait for a sync per
// message.
//
// It reports whether the deliveries are stored (made: the sessions have
// them) and whether they are safe: stored and, for persistent sessions in
// a cluster that replicates their queues, replicated too.
//
// moves is the count of hand-overs committed when the messages were
// routed: a caller that decided before, from MovesCommitted, which
// sessions this node holds knows whether that still held.
//
// asked[i] says that message i's sender waits for this node's
// confirmation (or may relay it to the persistent sessions it reaches
// here); rooms[i] is then non-nil if the confirmation must wait for room,
// or must not be sent: a persistent session dropped it (Room.Overflow).
// rooms is nil when no message needs either.
//
// A QoS 1/2 message no confirmation is asked for (for clean sessions here)
// is kept past the bound of a session it finds full, as a held
// publisher's is, and that session is listed in full: the caller tells
// the senders to hold their publishers back until it has room (Full).
func (b *Broker) InjectBatch(ms []*session.Message, asked []bool) (stored, replicated bool, moves uint64, rooms []*Room, full []Full) {
	t := b.begin(true)
	sync := false
	b.handMu.RLock()
	moves = b.moves.Load()
	for i, m := range ms {
		sync = sync || m.QoS > 0
		if i >= len(asked) || !asked[i] {
			if m.QoS == 0 {
				b.route(m, t, sharedNone)
				continue
			}
			hs := holdSet{rx: &remoteRoute{}}
			b.routeTo(m, t, sharedNone, &hs)
			for _, cl := range hs.on {
				if !slices.ContainsFunc(full, func(f Full) bool { return f.Room.on[0] == cl }) {
					full = append(full, Full{ClientID: cl.id, Room: &Room{b: b, on: []*client{cl}}})
				}
			}
			continue
		}
		rx := remoteRoute{}
		hs := holdSet{rx: &rx}
		b.routeTo(m, t, sharedNone, &hs)
		if len(hs.on) == 0 && len(rx.overflow) == 0 {
			continue
		}
		if rooms == nil {
			rooms = make([]*Room, len(ms))
		}
		rooms[i] = &Room{b: b, on: hs.on, Overflow: len(rx.overflow) > 0}
	}
	b.handMu.RUnlock()
	stored = t.commit(sync) == nil
	return stored, stored && t.replicated(), moves, rooms, full
}

// Full is a session that QoS 1/2 messages from other nodes found full,
// with no confirmation to hold their publishers back (InjectBatch).
type Full struct {
	ClientID string
	// Room waits until the session has room again, or met the
	// slow-consumer policy.
	Room *Room
}

// maxFlowFilters bounds the filters named for a full session
// (FlowFilters).
const maxFlowFilters = 64

// FlowFilters lists the filters through which clientID's session takes
// messages from other nodes (not $share ones, which NATS balances):
// those the senders hold their publishers back for while it is full.
// A session with more than maxFlowFilters is named by "#" (every topic
// but $ ones).
func (b *Broker) FlowFilters(clientID string) []string {
	var fs []string
	b.subs.ClientSubscriptions(clientID, func(group, filter string, _ subValue) bool {
		if group == "" {
			fs = append(fs, filter)
		}
		return true
	})
	if len(fs) > maxFlowFilters {
		return []string{"#"}
	}
	return fs
}

// InjectRelayed is InjectTo for a message relayed through the stream,
// whose publisher has its acknowledgement: a connected session whose
// queue is past its hard limit does not take it (it would drop it) and is
// listed in full, for the caller to offer it again later.
func (b *Broker) InjectRelayed(m *session.Message, clientIDs []string) (safe bool, missing, full []string) {
	only := make(map[string]bool, len(clientIDs))
	t := b.begin(true)
	b.handMu.RLock()
	b.mu.Lock()
	for _, id := range clientIDs {
		cl := b.clients[id]
		if cl == nil {
			missing = append(missing, id)
			continue
		}
		cl.mu.Lock()
		over := m.QoS > 0 && cl.sess.Overflows(m)
		cl.mu.Unlock()
		if over {
			full = append(full, id)
		} else {
			only[id] = true
		}
	}
	b.mu.Unlock()
	if len(only) > 0 {
		// Filled between the look above and the delivery: dropped there,
		// and offered again as well.
		rx := remoteRoute{noHold: true}
		b.routeTo(m, t, sharedMode{none: true, only: only}, &holdSet{rx: &rx})
		for _, cl := range rx.overflow {
			full = append(full, cl.id)
		}
	}
	b.handMu.RUnlock()
	return t.commit(m.QoS > 0) == nil && t.replicated(), missing, full
}

// noteRemote counts a publish's acknowledgement that waits for other
// nodes to confirm its message, if it does.
func (h *handler) noteRemote(t *tx) {
	if t == nil || t.remote == nil {
		return
	}
	sc := h.takeScratch()
	if len(sc.remote) >= maxHeldAcks {
		sc.pruneRemote()
	}
	sc.remote = append(sc.remote, t.remote)
}

// awaitRemote stops the reader before a QoS 1/2 PUBLISH while
// maxHeldAcks of its acknowledgements wait for other nodes: a node whose
// subscriber is full holds its confirmation back (Room), and the
// publisher is then read no further ahead than a locally held one (flow.go).
func (h *handler) awaitRemote() {
	sc := h.hs.scratch
	if sc == nil || len(sc.remote) < maxHeldAcks {
		return
	}
	if sc.pruneRemote(); len(sc.remote) < maxHeldAcks {
		return
	}
	b := h.b
	b.holdMu.Lock()
	h.cl.flow.stalled.Store(true)
	b.holdMu.Unlock()
	defer h.cl.flow.stalled.Store(false)
	b.Flow.Stalls.Add(1)
	for len(sc.remote) >= maxHeldAcks {
		select {
		case <-sc.remote[0]:
		case <-h.c.Done():
			return
		}
		sc.pruneRemote()
	}
}

// pruneRemote forgets the acknowledgements no longer waiting.
func (sc *pubScratch) pruneRemote() {
	n := 0
	for _, c := range sc.remote {
		select {
		case <-c:
		default:
			sc.remote[n] = c
			n++
		}
	}
	clear(sc.remote[n:])
	sc.remote = sc.remote[:n]
}

// waitingRemote reports whether acknowledgements still wait for other
// nodes.
func (sc *pubScratch) waitingRemote() bool {
	if len(sc.remote) == 0 {
		return false
	}
	sc.pruneRemote()
	return len(sc.remote) > 0
}
