package session

import (
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

// A session that is not persistent remembers the names of the wills it
// took, and only those: another node may publish a will again under its
// name after the will's node was lost.
func TestCleanSessionRemembersWillsOnly(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.Attach(nil, Link{Version: packet.V5}, t0)
	will := msg("t", 2)
	will.Origin = WillOrigin(7, 1)
	s.Deliver(nil, Delivery{Msg: will, QoS: 2}, t0)
	s.Deliver(nil, Delivery{Msg: originMsg(2), QoS: 2}, t0)
	if !will.Origin.IsWill() || originMsg(2).Origin.IsWill() {
		t.Fatal("IsWill must tell a will's name from a message's")
	}
	if !s.Taken(WillOrigin(7, 1)) {
		t.Fatal("a session that is not persistent must remember the will it took")
	}
	if s.Taken(Origin{7, 2}) || s.Taken(Origin{7, 1}) {
		t.Fatal("a session that is not persistent must remember nothing but wills")
	}
}
