package cluster

import (
	"sync"
	"sync/atomic"

	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

// A persistent session claimed by this node is, for a moment, owned here
// without being held here: from the claim's compare-and-set (after which
// this node, and soon every node, stops forwarding its messages to the old
// owner) until the broker has installed the session (after the old owner
// confirmed the commit and sent what it queued meanwhile, a round trip).
// A message published on this node in that moment found no local session
// to route to and was not forwarded with confirmation either: the old
// owner may have had it through core NATS, but only into its tail if it
// routed it before the commit, and not at all if it was stopping or gone.
// The fault suite lost such messages in rolling restarts, where a
// stopping node's publishers and moving subscribers reconnect to the same
// node at once.
//
// So, from before the compare-and-set until the session is installed, the
// claiming node keeps (stashes) the QoS 1/2 messages published here that
// the arriving session subscribes to, and delivers them to it right after
// installing it, before its client attaches; their publishers'
// acknowledgements wait for that. A copy that also reached the session
// another way (the old owner's tail, the relay) carries the same name and
// is taken once.

// The node that takes a lost node's sessions over (takeOver) has the same
// moment for each session, from its compare-and-set to its install, and
// stashes the same way. A client reconnecting to that node meanwhile
// claims the same session there: the arrival ends when both have ended
// theirs, and what it stashed goes to the session if either installed it.

// arrival is a session this node is claiming, not yet installed.
type arrival struct {
	filters []string           // its subscriptions that promise delivery (QoS 1/2, not $share)
	msgs    []*session.Message // published here meanwhile, matching filters
	done    chan struct{}      // closed once msgs are delivered to the session (or dropped)
	// Who waits for it: a client's claim (Claim), the takeover of a lost
	// node's sessions (takeOver); installed: one of them installed it.
	claim, takeover, installed bool
	took                       chan struct{} // made when takeover is set, closed when it is cleared
}

// arrivals are the sessions being claimed, by client ID.
type arrivals struct {
	mu    sync.Mutex
	by    map[string]*arrival
	count atomic.Int32 // len(by), read without mu on every publish
}

// arrive starts stashing, for clientID's session arriving with subs, the
// messages published here that it must get. It replaces an earlier
// arrival of the same session (a claim's next attempt), keeping what that
// one stashed.
func (n *Node) arrive(clientID string, subs []string) { n.arriveFor(clientID, subs, false) }

// arriveFor is arrive for a client's claim or, with takeover, for the
// takeover of a lost node's sessions.
func (n *Node) arriveFor(clientID string, subs []string, takeover bool) {
	var filters []string
	for _, f := range subs {
		if _, _, shared := topic.ParseShared(f); shared || topic.ValidateFilter(f) != nil {
			continue
		}
		filters = append(filters, f)
	}
	a := &n.arr
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.by == nil {
		a.by = make(map[string]*arrival)
	}
	x := a.by[clientID]
	if x == nil {
		x = &arrival{done: make(chan struct{})}
		a.by[clientID] = x
		a.count.Add(1)
	}
	x.filters = filters
	if takeover {
		if !x.takeover {
			x.took = make(chan struct{})
		}
		x.takeover = true
	} else {
		x.claim = true
	}
}

// stash keeps m for every arriving session that subscribes to it and
// returns what its acknowledgement must wait for (nil: none). Called for
// every message published on this node, before it is routed locally.
func (n *Node) stash(m *session.Message) <-chan struct{} {
	a := &n.arr
	if m.QoS == 0 || a.count.Load() == 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var wait <-chan struct{}
	for _, x := range a.by {
		for _, f := range x.filters {
			if topic.Match(f, m.Topic) {
				x.msgs = append(x.msgs, m)
				if wait == nil {
					wait = x.done
				} else {
					wait = both(wait, x.done)
				}
				break
			}
		}
	}
	return wait
}

// arrived ends clientID's arrival: installed says whether its session is
// held here now, and then what was stashed for it is delivered to it.
func (n *Node) arrived(clientID string, installed bool) { n.arrivedFor(clientID, installed, false) }

// arrivedFor is arrived for a client's claim or, with takeover, for the
// takeover of a lost node's sessions; the arrival ends once neither
// waits for it.
func (n *Node) arrivedFor(clientID string, installed, takeover bool) {
	a := &n.arr
	a.mu.Lock()
	x := a.by[clientID]
	if x != nil {
		if takeover {
			if x.takeover {
				close(x.took)
			}
			x.takeover = false
		} else {
			x.claim = false
		}
		x.installed = x.installed || installed
		installed = x.installed
		if x.claim || x.takeover {
			x = nil // the other one ends it
		} else {
			delete(a.by, clientID)
			a.count.Add(-1)
		}
	}
	a.mu.Unlock()
	if x == nil {
		return
	}
	defer close(x.done)
	if !installed {
		// The claim failed before the record named this node: the
		// session's owner kept it, and forwarding to it never stopped.
		return
	}
	for _, m := range x.msgs {
		if safe, missing := n.b.InjectTo(m, []string{clientID}); !safe || len(missing) > 0 {
			n.log.Warn("cluster: a message published while a session arrived could not be stored for it",
				"client_id", clientID, "topic", m.Topic, "held", len(missing) == 0)
		}
	}
	if len(x.msgs) > 0 {
		n.log.Debug("cluster: messages published while a session arrived delivered to it", "client_id", clientID, "messages", len(x.msgs))
	}
}

// takingOver returns, while this node takes clientID's session over from
// a lost node (between the compare-and-set and the install), a channel
// closed once that is done; nil otherwise.
func (n *Node) takingOver(clientID string) <-chan struct{} {
	a := &n.arr
	a.mu.Lock()
	defer a.mu.Unlock()
	if x := a.by[clientID]; x != nil && x.takeover {
		return x.took
	}
	return nil
}
