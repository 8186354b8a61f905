package broker

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// holdStore holds the first commit made after arm until release is
// closed, telling entered when it does: a connection's handler held
// there has packets it already read waiting behind it.
type holdStore struct {
	store.Store
	arm     atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *holdStore) NewBatch() store.Batch { return &holdBatch{Batch: s.Store.NewBatch(), s: s} }

type holdBatch struct {
	store.Batch
	s *holdStore
}

func (b *holdBatch) Commit(sync bool) error {
	if b.s.arm.CompareAndSwap(true, false) {
		close(b.s.entered)
		<-b.s.release
	}
	return b.Batch.Commit(sync)
}

// TestLateAckOfReplacedConnectionLosesNothing: a PUBACK that a client sent
// on its old connection, read by the broker only after a new connection
// took the session over, must not let a queued message out on the old
// connection. It used to: the acknowledgement freed a slot of the window,
// the next queued message was sent on the dying connection and held as
// inflight, so the new connection (whose resend of the inflight messages
// was already done) never got it, nor would until the client's next
// reconnect. The fault suite lost acknowledged messages so for a
// subscriber whose connection was replaced while the broker still read
// its last acknowledgements.
func TestLateAckOfReplacedConnectionLosesNothing(t *testing.T) {
	st := &holdStore{Store: memory.New(), entered: make(chan struct{}), release: make(chan struct{})}
	b := newFaultBroker(t, st)
	lb := serveLoopback(t, b)
	defer lb.stop()
	released := false
	defer func() {
		if !released {
			close(st.release)
		}
	}()

	// The subscriber takes two messages at a time.
	old := dialRaw(t, lb.addr, packet.V5)
	expiry, window := uint32(300), uint16(2)
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "sub", KeepAlive: 60}
	cp.Properties.SessionExpiry = &expiry
	cp.Properties.ReceiveMaximum = &window
	old.mustSend(cp)
	if ack, ok := old.read().(*packet.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("connect: %+v", ack)
	}
	old.mustSend(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "t", QoS: 1}}})
	if _, ok := old.read().(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}

	pub := dialRaw(t, lb.addr, packet.V5)
	pub.connect("pub", true, 0)
	const n = 6
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("m%d", i+1))
		if rc := pub.pub1(uint16(i+1), "t", want[i]); rc >= 0x80 {
			t.Fatalf("publish %d refused: 0x%02x", i+1, byte(rc))
		}
	}

	// The old connection has m1 and m2; the others are queued.
	var ids []uint16
	for range 2 {
		p, ok := old.read().(*packet.Publish)
		if !ok {
			t.Fatalf("want a PUBLISH on the old connection, got %T", p)
		}
		ids = append(ids, p.PacketID)
	}
	// Both acknowledgements in one write: the broker reads them together,
	// and its handling of the first is held in its commit while the
	// second waits behind it.
	st.arm.Store(true)
	old.mustSend(&packet.Ack{Kind: packet.PUBACK, PacketID: ids[0]}, &packet.Ack{Kind: packet.PUBACK, PacketID: ids[1]})
	select {
	case <-st.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first acknowledgement's commit never came")
	}

	// The client comes back on a new connection meanwhile: a takeover.
	nc := dialRaw(t, lb.addr, packet.V5)
	nc.mustSend(cp)
	if ack, ok := nc.read().(*packet.Connack); !ok || ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("reconnect: %+v", ack)
	}
	// Now the old connection's handler goes on, with the second
	// acknowledgement read before the takeover.
	close(st.release)
	released = true

	got := nc.collect(want[1:], 500*time.Millisecond)
	for _, w := range want[1:] {
		if got[w] == 0 {
			t.Errorf("%s never reached the new connection (got %v)", w, got)
		}
	}
}
