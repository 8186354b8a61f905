package cluster

import "github.com/starling-mqtt/starling/internal/session"

// NameWill names a will when its client sets it (broker.WillNamer): the
// name goes into the session's record with the will, so that a node that
// publishes it again from that record (the takeover of this node's
// sessions, should this node be lost after publishing it and before the
// record dropped it) publishes it under the same name, which a session
// that had it takes once.
func (n *Node) NameWill(m *session.Message) {
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	n.seq++
	m.Origin = session.WillOrigin(n.instance, n.seq)
}

// NameWill is Node.NameWill for a node that does not mirror deliveries.
func (l localQueues) NameWill(m *session.Message) {
	if wn, ok := l.Backplane.(interface{ NameWill(*session.Message) }); ok {
		wn.NameWill(m)
	}
}
