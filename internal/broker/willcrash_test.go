package broker

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// haltStore is a kill at a chosen point: the commit that takes id's will
// out of the store (its session deleted, or its record put without a
// will) is applied, and every commit after it is lost, as if the process
// had died right after that commit returned.
type haltStore struct {
	store.Store
	id     string
	halted atomic.Bool
}

type haltBatch struct {
	store.Batch
	s        *haltStore
	dropWill bool // the batch takes id's will out of the store
}

func (s *haltStore) NewBatch() store.Batch { return &haltBatch{Batch: s.Store.NewBatch(), s: s} }

func (b *haltBatch) DeleteSession(id string) {
	b.dropWill = b.dropWill || id == b.s.id
	b.Batch.DeleteSession(id)
}

func (b *haltBatch) PutSession(r *store.Session) {
	b.dropWill = b.dropWill || r.ClientID == b.s.id && r.Will == nil
	b.Batch.PutSession(r)
}

func (b *haltBatch) Commit(sync bool) error {
	if b.s.halted.Load() {
		return nil // the process is dead: nothing reaches the store
	}
	if err := b.Batch.Commit(sync); err != nil {
		return err
	}
	if b.dropWill {
		b.s.halted.Store(true)
	}
	return nil
}

// connectWillOpen connects id over v5 with a will on wills/<id> and keeps
// the connection open.
func connectWillOpen(t *testing.T, lb *loopBroker, id string, delay, expiry uint32) *rawClient {
	t.Helper()
	c := dialRaw(t, lb.addr, packet.V5)
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 60,
		Will: &packet.Will{Topic: "wills/" + id, Payload: []byte("gone"), QoS: 1}}
	cp.Will.Properties.WillDelay = &delay
	cp.Properties.SessionExpiry = &expiry
	c.mustSend(cp)
	if ack, ok := c.read().(*packet.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("connect %s: %+v", id, ack)
	}
	return c
}

// A will the broker takes out of the store is published in the same
// commit: a kill right after that commit loses no will, whichever path
// makes it due (a clean start ending the offline session, a takeover of a
// will without delay, the will delay, the session's expiry, a connection
// ending with a will without delay, a hand-over to another node with a
// clean start, a will released in a cluster after its delay), and the will is not published again
// after the restart.
func TestWillCrashAfterRemovalCommit(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, lb *loopBroker, clk *fakeClock, st *haltStore)
	}{
		{"clean start ends offline session", func(t *testing.T, lb *loopBroker, clk *fakeClock, st *haltStore) {
			connectWill(t, lb, "c", 100, 60)
			dialRaw(t, lb.addr, packet.V5).connect("c", true, 60)
		}},
		{"takeover publishes will without delay", func(t *testing.T, lb *loopBroker, clk *fakeClock, st *haltStore) {
			connectWillOpen(t, lb, "c", 0, 60)
			dialRaw(t, lb.addr, packet.V5).connect("c", false, 60)
		}},
		{"will delay ends", func(t *testing.T, lb *loopBroker, clk *fakeClock, st *haltStore) {
			connectWill(t, lb, "c", 4, 60)
			clk.Advance(4 * time.Second)
		}},
		{"session expires", func(t *testing.T, lb *loopBroker, clk *fakeClock, st *haltStore) {
			connectWill(t, lb, "c", 100, 3)
			clk.Advance(3 * time.Second)
		}},
		{"connection ends with will without delay", func(t *testing.T, lb *loopBroker, clk *fakeClock, st *haltStore) {
			connectWill(t, lb, "c", 0, 60)
		}},
		{"hand-over to another node with clean start", func(t *testing.T, lb *loopBroker, clk *fakeClock, st *haltStore) {
			connectWill(t, lb, "c", 100, 60)
			lb.b.PrepareHandOver("c", true)
		}},
		{"released will past its delay", func(t *testing.T, lb *loopBroker, clk *fakeClock, st *haltStore) {
			connectWill(t, lb, "c", 4, 60)
			// Restarted in a cluster after the delay: the will waits
			// for ReleaseWills, which finds it due.
			next, _ := restartAt(t, st, clk.Now().Add(10*time.Second), stubBackplane{})
			next.b.ReleaseWills(func(string) bool { return true })
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &haltStore{Store: memory.New(), id: "c"}
			clk := newFakeClock()
			first := lifeBroker(t, clk, st, nil)
			watch(first.b)
			tc.run(t, first, clk, st)
			waitFor(t, "the commit that takes c's will out of the store", st.halted.Load)

			second, clk2 := restartAt(t, st.Store, clk.Now(), nil)
			wantWills(t, second.b, 1, "after a kill right after the will left the store")
			clk2.Advance(time.Hour)
			wantWills(t, second.b, 1, "an hour after the restart (published once)")
		})
	}
}
