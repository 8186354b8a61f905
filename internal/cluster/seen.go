package cluster

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A message from another node reaches a persistent session here directly
// (NATS core) and, when this node did not confirm it in time (its store or
// the queue stream was slow, a leader being elected), also through the
// relay stream. The relayed copy must not be delivered again to a session
// that had the direct one: for QoS 2 that would be a second PUBLISH under
// a new packet ID, which no client can tell from a new message. So the
// node remembers, for a while, which of its persistent sessions each such
// message was routed to directly, and the relay consumer skips them.
const (
	// seenFor is how long a direct routing is remembered at least (twice
	// at most): past the relay's wait and retries while a session's node
	// is lost (relayUnheld times relayRetry).
	seenFor = 90 * time.Second
	// seenMax bounds the messages remembered per period; past it the
	// older period is forgotten early (duplicates then, not losses).
	seenMax = 1 << 17
)

type origin struct{ instance, seq uint64 }

// seenEntry is one message's direct routing on this node: the persistent
// sessions it was for (their keys, and which incarnation of each this
// node held), pending until the operation that routed it is committed.
type seenEntry struct {
	to      []heldSession
	pending bool
}

type heldSession struct {
	key         string
	incarnation uint64
}

type seenSet struct {
	mu        sync.Mutex
	cur, prev map[origin]*seenEntry
	since     time.Time
}

// seenState is what the relay consumer does with a session's copy.
type seenState int

const (
	seenNo      seenState = iota // not routed here directly: deliver
	seenPending                  // being routed directly: ask again later
	seenStored                   // routed directly to the session held now, and stored: skip
)

// heldFor lists the sessions msg names for this node (Stl-For) that this
// node owns and holds now: those the direct routing delivers it to. all
// says whether that is every one named; asked, whether msg asks this node
// to confirm at all.
func (n *Node) heldFor(msg *nats.Msg) (held []heldSession, all, asked bool) {
	i := slices.Index(msg.Header[hdrConfirm], n.cfg.Node)
	if i < 0 {
		return nil, false, false
	}
	prefix := fmt.Sprintf("%d.", i)
	all = true
	for _, v := range msg.Header[hdrFor] {
		k, ok := strings.CutPrefix(v, prefix)
		if !ok {
			continue
		}
		if owner, found := n.mirroredOwner(k); !found || owner != n.cfg.Node {
			all = false
			continue
		}
		id, err := unkey(k)
		if err != nil {
			all = false
			continue
		}
		inc, ok := n.b.SessionIncarnation(id)
		if !ok {
			all = false
			continue
		}
		held = append(held, heldSession{k, inc})
	}
	return held, all, true
}

// routing notes that a message is about to be routed directly to the
// sessions to.
func (s *seenSet) routing(o origin, to []heldSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.cur == nil || now.Sub(s.since) >= seenFor || len(s.cur) >= seenMax {
		s.prev, s.cur, s.since = s.cur, make(map[origin]*seenEntry), now
	}
	s.cur[o] = &seenEntry{to: to, pending: true}
}

// routed settles what routing noted: stored, or forgotten (the operation
// failed, or a session may have left before it was routed).
func (s *seenSet) routed(os []origin, stored bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range os {
		for _, m := range []map[origin]*seenEntry{s.cur, s.prev} {
			if e := m[o]; e != nil {
				if stored {
					e.pending = false
				} else {
					delete(m, o)
				}
			}
		}
	}
}

// state says whether the session of key k, which this node holds now as
// incarnation inc, had message o routed to it directly here. A session
// installed since (taken over from the queue stream after this node was
// out of touch, say) may not have the direct copy: it gets the relayed one.
func (s *seenSet) state(o origin, k string, inc uint64) seenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range []map[origin]*seenEntry{s.cur, s.prev} {
		e := m[o]
		if e == nil {
			continue
		}
		for _, h := range e.to {
			switch {
			case h.key != k:
			case e.pending:
				return seenPending
			case h.incarnation == inc:
				return seenStored
			}
		}
	}
	return seenNo
}
