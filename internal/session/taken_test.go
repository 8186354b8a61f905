package session

import (
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

func originMsg(seq uint64) *Message {
	m := msg("t", 2)
	m.Origin = Origin{Instance: 7, Seq: seq}
	return m
}

// A persistent session remembers the messages it took, queued, sent or
// acknowledged already, and passes that memory on to the session that
// continues it on another node.
func TestTakenRemembersAndMoves(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.ExpiryInterval = 60
	s.Attach(nil, Link{Version: packet.V5}, t0)
	p := pub(t, s.Deliver(nil, Delivery{Msg: originMsg(1), QoS: 2}, t0))
	s.Detach()
	s.Deliver(nil, Delivery{Msg: originMsg(2), QoS: 2}, t0) // queued offline
	if !s.Taken(Origin{7, 1}) || !s.Taken(Origin{7, 2}) || s.Taken(Origin{7, 3}) {
		t.Fatal("taken must say yes to the inflight and queued messages only")
	}
	s.Attach(nil, Link{Version: packet.V5}, t0)
	if _, _, ok := s.Pubrec(nil, p.PacketID, 0, t0); !ok {
		t.Fatal("pubrec")
	}
	if _, ok := s.Pubcomp(nil, p.PacketID, t0); !ok {
		t.Fatal("pubcomp")
	}
	if !s.Taken(Origin{7, 1}) {
		t.Fatal("an acknowledged message must still count as taken")
	}
	if s.Taken(Origin{}) {
		t.Fatal("a message without origin is never taken")
	}

	moved := New("c", Limits{MaxQueued: 10})
	moved.ExpiryInterval = 60
	moved.RememberAll(s.Remembered())
	if !moved.Taken(Origin{7, 1}) || !moved.Taken(Origin{7, 2}) {
		t.Fatal("the session continued elsewhere forgot what it took")
	}
}

// The memory is bounded, oldest forgotten first, and a session that is
// not persistent keeps none (nothing else can bring it a copy).
func TestTakenBounded(t *testing.T) {
	s := New("c", Limits{MaxQueued: RememberMax + 10})
	s.ExpiryInterval = 60
	for i := range uint64(RememberMax + 5) {
		s.Deliver(nil, Delivery{Msg: originMsg(i + 1), QoS: 1}, t0)
	}
	if s.Taken(Origin{7, 5}) || !s.Taken(Origin{7, 6}) || !s.Taken(Origin{7, RememberMax + 5}) {
		t.Fatal("want the oldest 5 forgotten and the rest remembered")
	}
	r := s.Remembered()
	if len(r) != RememberMax || r[0] != (Origin{7, 6}) || r[len(r)-1] != (Origin{7, RememberMax + 5}) {
		t.Fatalf("remembered %d from %v to %v, want oldest first", len(r), r[0], r[len(r)-1])
	}

	clean := New("c", Limits{MaxQueued: 10})
	clean.Attach(nil, Link{Version: packet.V5}, t0)
	clean.Deliver(nil, Delivery{Msg: originMsg(1), QoS: 1}, t0)
	if clean.Taken(Origin{7, 1}) || len(clean.Remembered()) != 0 {
		t.Fatal("a session without expiry must remember nothing")
	}
}

// An inbound QoS 2 packet ID restored with the name of its message asks
// the broker to route a resend of it again, once.
func TestTakeReplayOnce(t *testing.T) {
	s := New("p", Limits{})
	s.RestoreInbound(5)
	s.RestoreInbound(6)
	s.NameInbound(5, Origin{3, 41})
	if first, _ := s.ReceiveQoS2(nil, 5, true); first {
		t.Fatal("a resend of a held ID must not be a first receipt")
	}
	if o, ok := s.TakeReplay(5); !ok || o != (Origin{3, 41}) {
		t.Fatalf("TakeReplay(5) = %v, %v; want the restored name", o, ok)
	}
	if _, ok := s.TakeReplay(5); ok {
		t.Fatal("a restored ID replayed twice")
	}
	if _, ok := s.TakeReplay(6); ok {
		t.Fatal("an ID restored without a name asks for a replay")
	}
	id, _ := s.ReceiveQoS2(nil, 7, false)
	s.NameInbound(7, Origin{1, 1})
	if _, ok := s.TakeReplay(7); !id || ok {
		t.Fatal("an ID received on this run asks for a replay")
	}
	if s.InboundOrigin(7) != (Origin{1, 1}) {
		t.Fatal("the name of a received ID is not kept")
	}
}

// journal records what a session journals, for the memory's records.
type takenJournal struct {
	Journal
	slots map[uint16]Origin
	ns    map[uint16]uint64
}

func (j *takenJournal) PutOutbound(string, uint64, *Delivery, uint16, byte, bool) {}
func (j *takenJournal) PutTaken(_ string, slot uint16, o Origin, n uint64) {
	j.slots[slot], j.ns[slot] = o, n
}

// The memory is journaled slot by slot, the n-th in slot (n-1) mod
// RememberMax, and a session rebuilt from those records in order of n
// remembers the same and goes on in the slot after the newest.
func TestTakenJournaledAndRestored(t *testing.T) {
	j := &takenJournal{slots: map[uint16]Origin{}, ns: map[uint16]uint64{}}
	s := New("c", Limits{MaxQueued: 10})
	s.ExpiryInterval = 60
	for i := range uint64(3) {
		s.Deliver(j, Delivery{Msg: originMsg(i + 1), QoS: 1}, t0)
	}
	if len(j.slots) != 3 || j.slots[2] != (Origin{7, 3}) || j.ns[2] != 3 {
		t.Fatalf("journaled %v %v, want slots 0-2 with the 3 origins", j.slots, j.ns)
	}
	r := New("c", Limits{MaxQueued: 10})
	r.ExpiryInterval = 60
	for slot := range uint16(3) {
		r.RestoreTaken(j.slots[slot], j.ns[slot])
	}
	if !r.Taken(Origin{7, 1}) || !r.Taken(Origin{7, 3}) {
		t.Fatal("restored session forgot what it took")
	}
	var got []uint64
	r.TakenRecords(func(slot uint16, o Origin, n uint64) { got = append(got, n) })
	if len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("records n = %v, want 1 2 3", got)
	}
}

// Restoring a memory a session cannot keep (it ends with its connection,
// or the origin is none) makes no memory: a clean session restored from a
// store costs no map.
func TestRestoreTakenKeepsNothingForClean(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.RestoreTaken(Origin{Instance: 7, Seq: 1}, 1)
	s.ExpiryInterval = 60
	s.RestoreTaken(Origin{}, 2)
	if s.mem != nil {
		t.Fatalf("memory made for nothing remembered: %+v", s.mem)
	}
	s.RestoreTaken(Origin{Instance: 7, Seq: 3}, 3)
	if !s.Taken(Origin{Instance: 7, Seq: 3}) {
		t.Fatal("a persistent session's restored origin is not remembered")
	}
}
