package session

import (
	"fmt"
	"slices"
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

// recorder is a Journal that notes each change as a line.
type recorder []string

func (r *recorder) PutOutbound(id string, seq uint64, _ *Delivery, packetID uint16, state byte, first bool) {
	*r = append(*r, fmt.Sprintf("%s put %d id=%d state=%d first=%v", id, seq, packetID, state, first))
}

func (r *recorder) DeleteOutbound(id string, seq uint64, _ *Delivery) {
	*r = append(*r, fmt.Sprintf("%s delete %d", id, seq))
}

func (r *recorder) PutInbound(id string, packetID uint16) {
	*r = append(*r, fmt.Sprintf("%s inbound %d", id, packetID))
}

func (r *recorder) DeleteInbound(id string, packetID uint16) {
	*r = append(*r, fmt.Sprintf("%s release %d", id, packetID))
}

func (r *recorder) PutTaken(id string, slot uint16, _ Origin, n uint64) {
	*r = append(*r, fmt.Sprintf("%s taken %d slot=%d", id, n, slot))
}

// The journal a call is given receives that call's changes, and only
// those: a delivery queued offline, sent on attach, acknowledged; an
// inbound QoS 2 ID received and released. A call given nil records
// nothing.
func TestJournalPerCall(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10, MaxInflight: 10})
	var queued, attached, acked, inbound recorder
	s.Deliver(&queued, Delivery{Msg: msg("t", 1), QoS: 1}, t0)
	s.Deliver(nil, Delivery{Msg: msg("t", 0), QoS: 0}, t0) // offline QoS 0: dropped, nothing to record
	pkts := s.Attach(&attached, Link{Version: packet.V5, ReceiveMax: 10}, t0)
	if len(pkts) != 1 {
		t.Fatalf("attach sent %d packets, want the queued one", len(pkts))
	}
	id := pub(t, pkts[0]).PacketID
	if _, ok := s.Puback(&acked, id, t0); !ok {
		t.Fatal("PUBACK not matched")
	}
	if _, err := s.ReceiveQoS2(&inbound, 7, false); err != nil {
		t.Fatal(err)
	}
	s.Release(&inbound, 7)
	for _, c := range []struct {
		name      string
		got, want recorder
	}{
		{"queued offline", queued, recorder{"c put 1 id=0 state=0 first=true"}},
		{"sent on attach", attached, recorder{fmt.Sprintf("c put 1 id=%d state=%d first=false", id, waitPuback)}},
		{"acknowledged", acked, recorder{"c delete 1"}},
		{"inbound QoS 2", inbound, recorder{"c inbound 7", "c release 7"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: journal %q, want %q", c.name, c.got, c.want)
		}
	}
}
