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

// seenEntry is one message's direct routing on this node: the keys of the
// persistent sessions it was for, pending until the operation that
// routed it is committed.
type seenEntry struct {
	keys    []string
	pending bool
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
	seenStored                   // routed directly and stored: skip
)

// heldKeys lists the sessions msg names for this node (Stl-For) that this
// node owns and holds now: those the direct routing delivers it to.
func (n *Node) heldKeys(msg *nats.Msg) []string {
	i := slices.Index(msg.Header[hdrConfirm], n.cfg.Node)
	if i < 0 {
		return nil
	}
	prefix := fmt.Sprintf("%d.", i)
	var keys []string
	for _, v := range msg.Header[hdrFor] {
		k, ok := strings.CutPrefix(v, prefix)
		if !ok {
			continue
		}
		if owner, found := n.mirroredOwner(k); !found || owner != n.cfg.Node {
			continue
		}
		if id, err := unkey(k); err == nil && n.b.HasSession(id) {
			keys = append(keys, k)
		}
	}
	return keys
}

// routing notes that a message is about to be routed directly to the
// sessions of keys.
func (s *seenSet) routing(o origin, keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.cur == nil || now.Sub(s.since) >= seenFor || len(s.cur) >= seenMax {
		s.prev, s.cur, s.since = s.cur, make(map[origin]*seenEntry), now
	}
	s.cur[o] = &seenEntry{keys: keys, pending: true}
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

// state says whether the session of key k had message o routed to it
// directly on this node.
func (s *seenSet) state(o origin, k string) seenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range []map[origin]*seenEntry{s.cur, s.prev} {
		if e := m[o]; e != nil && slices.Contains(e.keys, k) {
			if e.pending {
				return seenPending
			}
			return seenStored
		}
	}
	return seenNo
}
