package broker

import "github.com/starling-mqtt/starling/internal/session"

// WillNamer is implemented by a backplane that names messages across a
// cluster (session.Message.Origin). A will is named when it is set, not
// when it is published, so that every publication of it carries that one
// name: by its node; by the node that takes a lost node's sessions over
// while their record still holds the will; by its node restarted with the
// will still in its store. A session takes a name once (session.Taken;
// a session that is not persistent remembers will names only,
// session.WillOrigin).
//
// Published by its node, a will leaves for the other nodes at once, and
// its removal reaches the cluster's record of the session only after the
// local commit, through the record's write loop. The two cannot be made
// one write, and publishing only once the record dropped it would lose
// the will to a node lost in between; so a node lost in that window has
// the will published again from the record, under the same name.
type WillNamer interface {
	NameWill(m *session.Message)
}

// nameWill names w (if any) through the backplane, if it names wills.
func (b *Broker) nameWill(w *willState) {
	if w == nil {
		return
	}
	if wn, ok := b.backplane.(WillNamer); ok {
		wn.NameWill(w.msg)
	}
}
