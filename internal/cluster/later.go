package cluster

import (
	"sync"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/session"
)

// laterSet tracks the QoS 2 messages ForwardLater named and delivered to
// this node's sessions but has not sent to the other nodes yet, by name.
//
// Such a message whose publisher's session another node took over while
// this one was fenced (the eviction in recheckSessions) must reach no
// session under that name: its client resends it to where its session
// went, and that node, which recovered the session from the queue
// stream, may not know its packet ID (the write was cut off with the
// node) and then routes the resend as a new message under a new name. So
// such a message is doomed: never sent from here, and dropped from the
// deliveries of the sessions evicted with it, which would otherwise carry
// the first copy to their new node next to the resend's second.
type laterSet struct {
	mu   sync.Mutex
	msgs map[session.Origin]*laterMsg
}

type laterMsg struct {
	publisher string
	doomed    bool
}

// add notes m, just named, as not sent yet.
func (l *laterSet) add(m *session.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.msgs == nil {
		l.msgs = make(map[session.Origin]*laterMsg)
	}
	l.msgs[m.Origin] = &laterMsg{publisher: m.Publisher}
}

// take forgets o and reports whether it may be sent (it is not doomed).
func (l *laterSet) take(o session.Origin) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.msgs[o]
	delete(l.msgs, o)
	return e == nil || !e.doomed
}

// held reports whether o is named and not sent yet.
func (l *laterSet) held(o session.Origin) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.msgs[o]
	return ok
}

// HeldBack implements broker.HeldBack: a session handed over while one of
// its QoS 2 messages waits here to be sent carries that message's name
// with its packet ID, so that its client's resend is routed on the next
// node; this node sends it only while the session is still here
// (ForwardLater).
func (n *Node) HeldBack(o session.Origin) bool { return n.later.held(o) }

// doom marks the messages not sent yet whose publisher is in gone and
// returns their names. Once marked, take refuses them.
func (l *laterSet) doom(gone map[string]bool) map[session.Origin]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out map[session.Origin]bool
	for o, e := range l.msgs {
		if gone[e.publisher] {
			e.doomed = true
			if out == nil {
				out = make(map[session.Origin]bool)
			}
			out[o] = true
		}
	}
	return out
}

// withoutDoomed returns held without the deliveries of doomed messages.
func withoutDoomed(held []broker.SnapshotDelivery, doomed map[session.Origin]bool) []broker.SnapshotDelivery {
	if len(doomed) == 0 {
		return held
	}
	out := held[:0]
	for _, d := range held {
		if !doomed[session.Origin(d.Msg.Origin)] {
			out = append(out, d)
		}
	}
	return out
}
