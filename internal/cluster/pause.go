package cluster

// Flow control across nodes for the QoS 1/2 messages no confirmation
// holds back: those to clean sessions (docs/flow-control.md). Such a
// message crosses NATS once, and its publisher has its acknowledgement
// as soon as its own node has it, so the receiving node cannot hold it
// back by waiting to confirm (flow.go does that for persistent sessions).
//
// Instead the receiving node keeps every such delivery that finds its
// session full past the session's bound, as a held local publisher's is
// (broker.InjectBatch), and tells every node that the session is full,
// naming its filters ("full" notice on stl.flow.<node>). It says so again
// every holdRefresh while the session stays full, and says "room" once it
// has room again or met the slow-consumer policy. A node that hears it
// pauses: the acknowledgement of each QoS 1/2 publish of its own whose
// topic matches a paused filter waits for the room notice, so that its
// publisher's reader stops once 64 of them wait (broker's awaitRemote),
// as for a local hold. A pause not renewed for holdLapse (the receiving
// node stopped, or restarted) ends by itself: a publisher is never held
// for a node that no longer says so.
//
// The notices cost nothing to a node of an earlier release: it does not
// subscribe to stl.flow.>, so NATS does not send them there.

import (
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/topic"
)

const (
	flowPrefix = "stl.flow." // stl.flow.<node>: that node's sessions full, or with room again
	// maxFlowBytes bounds the filters a notice names; past it, "#".
	maxFlowBytes = 16 << 10
)

// flowNotice says that a session of node is full (Full) or has room again.
type flowNotice struct {
	Node    string   `json:"node"`
	Client  string   `json:"client"`
	Full    bool     `json:"full"`
	Filters []string `json:"filters,omitempty"`
}

// fullSessions are this node's sessions whose fullness it announces.
type fullSessions struct {
	mu sync.Mutex // orders a session's room notice before its next full one
	on map[string]bool
}

// watchFull announces the sessions InjectBatch found full, unless it
// already does, until each has room again.
func (n *Node) watchFull(fs []broker.Full) {
	for _, f := range fs {
		n.fulls.mu.Lock()
		if n.fulls.on[f.ClientID] {
			n.fulls.mu.Unlock()
			continue
		}
		if n.fulls.on == nil {
			n.fulls.on = make(map[string]bool)
		}
		n.fulls.on[f.ClientID] = true
		n.sayFlow(f.ClientID, true, n.b.FlowFilters(f.ClientID))
		n.fulls.mu.Unlock()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			f.Room.Wait(n.ctx.Done(), holdRefresh, func() {
				n.sayFlow(f.ClientID, true, n.b.FlowFilters(f.ClientID))
			})
			n.fulls.mu.Lock()
			delete(n.fulls.on, f.ClientID)
			// Under the lock: a full notice for the session's next wait
			// goes out after this one (one connection keeps the order).
			n.sayFlow(f.ClientID, false, nil)
			n.fulls.mu.Unlock()
		}()
	}
}

// sayFlow tells every node that clientID's session here is full (taking
// messages through filters) or has room again.
func (n *Node) sayFlow(clientID string, full bool, filters []string) {
	size := 0
	for _, f := range filters {
		size += len(f)
	}
	if size > maxFlowBytes {
		filters = []string{"#"}
	}
	b, err := json.Marshal(flowNotice{Node: n.cfg.Node, Client: clientID, Full: full, Filters: filters})
	if err != nil {
		return
	}
	n.pc.Publish(flowPrefix+key(n.cfg.Node), b)
}

// heardFlow takes another node's notice.
func (n *Node) heardFlow(msg *nats.Msg) {
	var fn flowNotice
	if err := json.Unmarshal(msg.Data, &fn); err != nil {
		n.log.Warn("cluster: dropping undecodable flow notice", "subject", msg.Subject, "err", err)
		return
	}
	if fn.Node == n.cfg.Node {
		return
	}
	n.pause.note(fn, time.Now())
}

// pauses are the full sessions of other nodes this node holds its
// publishers back for.
type pauses struct {
	mu   sync.Mutex
	by   map[string]*pause        // by node and client ID
	live atomic.Pointer[[]*pause] // by's values, for publishes to read without the lock
	held atomic.Uint64            // publishes whose acknowledgement waited for a pause
}

// pause is one full session elsewhere: publishes matching its filters
// wait for done, closed when it has room, or the pause lapsed.
type pause struct {
	node    string
	filters []string
	done    chan struct{}
	renewed time.Time
}

// note applies a notice heard at now.
func (ps *pauses) note(fn flowNotice, now time.Time) {
	k := fn.Node + "\x00" + fn.Client
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.by[k]
	switch {
	case !fn.Full:
		if p == nil {
			return
		}
		close(p.done)
		delete(ps.by, k)
	case p == nil:
		if ps.by == nil {
			ps.by = make(map[string]*pause)
		}
		ps.by[k] = &pause{node: fn.Node, filters: fn.Filters, done: make(chan struct{}), renewed: now}
	default:
		// Publishes read the pause without the lock: a new one, the same
		// wait.
		ps.by[k] = &pause{node: fn.Node, filters: fn.Filters, done: p.done, renewed: now}
	}
	ps.publishLocked()
}

// lapse ends the pauses not renewed for holdLapse before now, and with
// all set, every pause (the node is closing). It returns the nodes of
// those that lapsed.
func (ps *pauses) lapse(now time.Time, all bool) (nodes []string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	changed := false
	for k, p := range ps.by {
		if all || now.Sub(p.renewed) >= holdLapse {
			close(p.done)
			delete(ps.by, k)
			changed = true
			if !slices.Contains(nodes, p.node) {
				nodes = append(nodes, p.node)
			}
		}
	}
	if changed {
		ps.publishLocked()
	}
	return nodes
}

func (ps *pauses) publishLocked() {
	if len(ps.by) == 0 {
		ps.live.Store(nil)
		return
	}
	l := make([]*pause, 0, len(ps.by))
	for _, p := range ps.by {
		l = append(l, p)
	}
	ps.live.Store(&l)
}

// wait is what a QoS 1/2 publish on topic waits for before its
// acknowledgement: room in every paused session it goes to; nil for
// nothing.
func (ps *pauses) wait(name string) <-chan struct{} {
	l := ps.live.Load()
	if l == nil {
		return nil
	}
	var c <-chan struct{}
	for _, p := range *l {
		if !p.matches(name) {
			continue
		}
		select {
		case <-p.done:
			continue
		default:
		}
		c = join(c, p.done)
	}
	if c != nil {
		ps.held.Add(1)
	}
	return c
}

func (p *pause) matches(name string) bool {
	for _, f := range p.filters {
		if topic.Match(f, name) {
			return true
		}
	}
	return false
}

// pauseLoop ends the pauses that are not renewed.
func (n *Node) pauseLoop() {
	defer n.wg.Done()
	t := time.NewTicker(holdRefresh)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			n.pause.lapse(time.Now(), true)
			return
		case now := <-t.C:
			if nodes := n.pause.lapse(now, false); len(nodes) > 0 {
				n.log.Info("cluster: nodes that said sessions there were full stopped saying so: their publishers here go on", "nodes", nodes)
			}
		}
	}
}

// join is closed once a and b are; a nil one counts as closed.
func join(a, b <-chan struct{}) <-chan struct{} {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return both(a, b)
}
