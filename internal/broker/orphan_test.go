package broker

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// killStore applies the commits it is allowed (left) and drops the
// rest, as a process killed after them would never make them.
type killStore struct {
	store.Store
	left atomic.Int64
}

func (s *killStore) NewBatch() store.Batch { return &killBatch{Batch: s.Store.NewBatch(), s: s} }

type killBatch struct {
	store.Batch
	s *killStore
}

func (b *killBatch) Commit(sync bool) error {
	if b.s.left.Add(-1) < 0 {
		return nil
	}
	return b.Batch.Commit(sync)
}

// A session taken over from a lost node, with a will due at once, is
// installed and its will published in one store operation: a node killed
// right after installing it no longer restarts with the session stored
// and the will published nowhere (the record naming this node still has
// the will, but it is read again only for a session this node does not
// hold). Likewise a will that waits out its delay is stored with the
// session, so that the restarted node still publishes it.
func TestOrphanAdoptedWithItsWillInOneCommit(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Hour} {
		mem := memory.New()
		st := &killStore{Store: mem}
		st.left.Store(1 << 30)
		b := New(config.Default().Limits, nil)
		b.SetStore(st)
		if err := b.Restore(); err != nil {
			t.Fatal(err)
		}
		b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "heir", Version: 5, ExpiryInterval: 600},
			Subs: []store.Subscription{{Filter: "will/#", Options: packet.Subscription{Filter: "will/#", QoS: 1}}}})

		st.left.Store(1) // killed after the next commit
		b.AdoptOrphan(&SessionSnapshot{Session: store.Session{ClientID: "gone", Version: 5, ExpiryInterval: 600,
			Will: &store.Will{Message: store.Message{Topic: "will/gone", Payload: []byte("w"), QoS: 1}, Delay: delay}}}, false, false)
		b.Close(time.Second)

		b2 := New(config.Default().Limits, nil)
		b2.SetStore(mem)
		if err := b2.Restore(); err != nil {
			t.Fatal(err)
		}
		if !b2.HasSession("gone") {
			b2.Close(time.Second)
			continue // nothing of the operation landed: the record still has the will
		}
		_, queued := b2.QueueTotals()
		b2.mu.Lock()
		cl := b2.clients["gone"]
		b2.mu.Unlock()
		cl.mu.Lock()
		pending := cl.will != nil
		cl.mu.Unlock()
		b2.Close(time.Second)
		switch {
		case delay == 0 && queued != 1:
			t.Errorf("delay 0: the adopted session restored, the will queued for its subscriber %d times, want once", queued)
		case delay > 0 && (!pending || queued != 0):
			t.Errorf("delay %v: the adopted session restored with its will pending %v, the will queued %d times; want pending, not yet published",
				delay, pending, queued)
		}
	}
}
