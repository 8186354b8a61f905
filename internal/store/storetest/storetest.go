// Package storetest is the contract test of store.Store, run against every
// implementation: Run for what any store must do, RunDurable for what a
// store that survives Close must do.
package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
)

// Contents is everything a store holds, as Load reports it, in Load order.
type Contents struct {
	Sessions      []*store.Session
	Messages      map[uint64]*store.Message
	MessageOrder  []uint64
	Subscriptions map[string][]*store.Subscription // by client ID, in load order
	Outbound      map[string]map[uint64]*store.Outbound
	Inbound       map[string][]uint16
	Retained      []*store.Message
	Taken         map[string]map[uint16]store.Taken
	// Kinds is the kind of each record in load order: 's', 'm', 'b', 'o', 'i', 'r', 't'.
	Kinds []byte
}

// LoadAll loads everything from s.
func LoadAll(t testing.TB, s store.Store) *Contents {
	t.Helper()
	c, err := Load(s)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

// Load loads everything from s.
func Load(s store.Store) (*Contents, error) {
	c := &Contents{
		Messages:      map[uint64]*store.Message{},
		Subscriptions: map[string][]*store.Subscription{},
		Outbound:      map[string]map[uint64]*store.Outbound{},
		Inbound:       map[string][]uint16{},
		Taken:         map[string]map[uint16]store.Taken{},
	}
	err := s.Load(store.Visitor{
		Session: func(x *store.Session) error {
			c.Sessions = append(c.Sessions, x)
			c.Kinds = append(c.Kinds, 's')
			return nil
		},
		Message: func(id uint64, m *store.Message) error {
			if _, dup := c.Messages[id]; dup {
				return fmt.Errorf("message %d visited twice", id)
			}
			c.Messages[id] = m
			c.MessageOrder = append(c.MessageOrder, id)
			c.Kinds = append(c.Kinds, 'm')
			return nil
		},
		Subscription: func(id string, x *store.Subscription) error {
			c.Subscriptions[id] = append(c.Subscriptions[id], x)
			c.Kinds = append(c.Kinds, 'b')
			return nil
		},
		Outbound: func(id string, seq uint64, o *store.Outbound) error {
			if c.Outbound[id] == nil {
				c.Outbound[id] = map[uint64]*store.Outbound{}
			}
			c.Outbound[id][seq] = o
			c.Kinds = append(c.Kinds, 'o')
			return nil
		},
		Inbound: func(id string, pid uint16) error {
			c.Inbound[id] = append(c.Inbound[id], pid)
			c.Kinds = append(c.Kinds, 'i')
			return nil
		},
		Retained: func(m *store.Message) error {
			c.Retained = append(c.Retained, m)
			c.Kinds = append(c.Kinds, 'r')
			return nil
		},
		Taken: func(id string, slot uint16, x store.Taken) error {
			if c.Taken[id] == nil {
				c.Taken[id] = map[uint16]store.Taken{}
			}
			c.Taken[id][slot] = x
			c.Kinds = append(c.Kinds, 't')
			return nil
		},
	})
	return c, err
}

// Session returns the loaded session of clientID, or nil.
func (c *Contents) Session(clientID string) *store.Session {
	for _, s := range c.Sessions {
		if s.ClientID == clientID {
			return s
		}
	}
	return nil
}

// RetainedByTopic returns the loaded retained message on topic, or nil.
func (c *Contents) RetainedByTopic(topic string) *store.Message {
	for _, m := range c.Retained {
		if m.Topic == topic {
			return m
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// FullMessage returns a message with every stored field set; n varies it.
func FullMessage(n int) *store.Message {
	return &store.Message{
		Topic:   fmt.Sprintf("sensors/%d/temp", n),
		Payload: []byte(fmt.Sprintf("payload %d \x00\xff", n)),
		QoS:     byte(1 + n%2),
		Retain:  n%3 == 0,
		Props: packet.Properties{
			PayloadFormat:   ptr(byte(1)),
			ContentType:     "application/json",
			ResponseTopic:   fmt.Sprintf("reply/%d", n),
			CorrelationData: []byte{0, 1, 2, byte(n)},
			UserProperties: []packet.UserProperty{
				{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "é", Value: ""},
			},
		},
		Expiry:    time.Unix(1_900_000_000+int64(n), 123456789).UTC(),
		Publisher: fmt.Sprintf("publisher-%d", n),
		// Every other message names its origin, as in a cluster.
		Origin: store.Origin{Instance: uint64(n%2) << 63, Seq: uint64(n%2) * uint64(n+1)},
	}
}

// FullSession returns a session of clientID with every field set, a will
// included.
func FullSession(clientID string) *store.Session {
	return &store.Session{
		ClientID:       clientID,
		Version:        5,
		ExpiryInterval: 0xFFFFFFFF,
		DisconnectedAt: time.Unix(1_800_000_000, 42).UTC(),
		Will: &store.Will{
			Message:        *FullMessage(7),
			Delay:          90 * time.Second,
			ExpiryInterval: 3600,
		},
	}
}

// FullSubscription returns a subscription with every field set.
func FullSubscription(filter string) *store.Subscription {
	return &store.Subscription{
		Filter: filter,
		Options: packet.Subscription{
			Filter: filter, QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2,
		},
		ID: 268435455,
	}
}

// FullOutbound returns an outbound record with every field set.
func FullOutbound(msgID uint64) *store.Outbound {
	return &store.Outbound{
		MessageID: msgID,
		QoS:       2,
		Retain:    true,
		SubIDs:    []int{1, 300, 268435455},
		Group:     "g1",
		Filter:    "sensors/+/temp",
		PacketID:  65535,
		State:     store.WaitPubcomp,
	}
}

// Normalize returns a deep copy with every time in UTC and without a
// monotonic reading, so reflect.DeepEqual compares instants.
func Normalize[T any](x T) T {
	switch v := any(x).(type) {
	case *store.Message:
		if v == nil {
			return x
		}
		c := v.Clone()
		if !c.Expiry.IsZero() {
			c.Expiry = c.Expiry.UTC().Round(0)
		}
		return any(c).(T)
	case *store.Session:
		if v == nil {
			return x
		}
		c := v.Clone()
		if !c.DisconnectedAt.IsZero() {
			c.DisconnectedAt = c.DisconnectedAt.UTC().Round(0)
		}
		if c.Will != nil && !c.Will.Expiry.IsZero() {
			c.Will.Expiry = c.Will.Expiry.UTC().Round(0)
		}
		return any(c).(T)
	}
	return x
}

// Equal reports whether two records are the same, times compared as instants.
func Equal[T any](a, b T) bool { return reflect.DeepEqual(Normalize(a), Normalize(b)) }

func commit(t testing.TB, b store.Batch, sync bool) {
	t.Helper()
	if err := b.Commit(sync); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// Run runs the contract on stores made by open; each call must return a new,
// empty store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("NoAliasing", func(t *testing.T) { testNoAliasing(t, open(t)) })
	t.Run("ZeroValues", func(t *testing.T) { testZeroValues(t, open(t)) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, open(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("DeleteSession", func(t *testing.T) { testDeleteSession(t, open(t)) })
	t.Run("LoadOrder", func(t *testing.T) { testLoadOrder(t, open(t)) })
	t.Run("VisitorError", func(t *testing.T) { testVisitorError(t, open(t)) })
	t.Run("BatchOrder", func(t *testing.T) { testBatchOrder(t, open(t)) })
	t.Run("AtomicVisibility", func(t *testing.T) { testAtomicVisibility(t, open(t)) })
	t.Run("ConcurrentCommits", func(t *testing.T) { testConcurrentCommits(t, open(t)) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, open(t)) })
	t.Run("Taken", func(t *testing.T) { testTaken(t, open(t)) })
}

// fill writes one record of every kind for clientID, with message id.
func fill(b store.Batch, clientID string, id uint64) {
	b.PutSession(FullSession(clientID))
	b.PutMessage(id, FullMessage(int(id)))
	b.PutSubscription(clientID, FullSubscription("sensors/+/temp"))
	b.PutSubscription(clientID, FullSubscription("$share/g1/sensors/#"))
	b.PutOutbound(clientID, 1, FullOutbound(id))
	b.PutOutbound(clientID, 2, FullOutbound(id))
	b.PutInbound(clientID, 1)
	b.PutInbound(clientID, 65535)
	b.PutRetained(FullMessage(int(id)))
}

func testRoundTrip(t *testing.T, s store.Store) {
	defer s.Close()
	b := s.NewBatch()
	fill(b, "client-1", 42)
	if b.Len() != 9 {
		t.Errorf("Len = %d, want 9", b.Len())
	}
	commit(t, b, true)
	checkFull(t, LoadAll(t, s), "client-1", 42)
}

// checkFull checks what fill wrote.
func checkFull(t testing.TB, c *Contents, clientID string, id uint64) {
	t.Helper()
	if got, want := c.Session(clientID), FullSession(clientID); !Equal(got, want) {
		t.Errorf("session:\n got %+v\nwant %+v", got, want)
	}
	if got, want := c.Messages[id], FullMessage(int(id)); !Equal(got, want) {
		t.Errorf("message:\n got %+v\nwant %+v", got, want)
	}
	subs := c.Subscriptions[clientID]
	if len(subs) != 2 || !Equal(subs[0], FullSubscription("$share/g1/sensors/#")) || !Equal(subs[1], FullSubscription("sensors/+/temp")) {
		t.Errorf("subscriptions: got %+v", subs)
	}
	for _, seq := range []uint64{1, 2} {
		if got, want := c.Outbound[clientID][seq], FullOutbound(id); !Equal(got, want) {
			t.Errorf("outbound %d:\n got %+v\nwant %+v", seq, got, want)
		}
	}
	if got := c.Inbound[clientID]; !slices.Equal(got, []uint16{1, 65535}) {
		t.Errorf("inbound = %v, want [1 65535]", got)
	}
	want := FullMessage(int(id))
	if got := c.RetainedByTopic(want.Topic); !Equal(got, want) {
		t.Errorf("retained:\n got %+v\nwant %+v", got, want)
	}
}

func testNoAliasing(t *testing.T, s store.Store) {
	defer s.Close()
	m := FullMessage(1)
	sess := FullSession("c")
	o := FullOutbound(1)
	b := s.NewBatch()
	b.PutMessage(1, m)
	b.PutSession(sess)
	b.PutOutbound("c", 1, o)
	b.PutRetained(m)
	// Change the caller's records after Put, before and after Commit.
	m.Payload[0] = 'X'
	sess.Will.Payload[0] = 'X'
	o.SubIDs[0] = 99
	commit(t, b, false)
	m.Props.CorrelationData[0] = 99
	m.Props.UserProperties[0].Value = "changed"
	c := LoadAll(t, s)
	if !Equal(c.Messages[1], FullMessage(1)) || !Equal(c.Session("c"), FullSession("c")) ||
		!Equal(c.Outbound["c"][1], FullOutbound(1)) || !Equal(c.Retained[0], FullMessage(1)) {
		t.Fatal("a change to the caller's record after Put reached the store")
	}
	// Change what Load returned; a second Load must not see it.
	c.Messages[1].Payload[0] = 'Y'
	c.Session("c").Will.Payload[0] = 'Y'
	c.Outbound["c"][1].SubIDs[0] = 77
	c.Retained[0].Props.UserProperties[0].Key = "changed"
	c2 := LoadAll(t, s)
	if !Equal(c2.Messages[1], FullMessage(1)) || !Equal(c2.Session("c"), FullSession("c")) ||
		!Equal(c2.Outbound["c"][1], FullOutbound(1)) || !Equal(c2.Retained[0], FullMessage(1)) {
		t.Fatal("a change to a loaded record reached the store")
	}
}

func testZeroValues(t *testing.T, s store.Store) {
	defer s.Close()
	b := s.NewBatch()
	b.PutSession(&store.Session{ClientID: "z"})
	b.PutMessage(0, &store.Message{})
	b.PutSubscription("z", &store.Subscription{})
	b.PutOutbound("z", 0, &store.Outbound{})
	b.PutRetained(&store.Message{Topic: "t"})
	commit(t, b, true)
	c := LoadAll(t, s)
	if got := c.Session("z"); got == nil || !got.DisconnectedAt.IsZero() || got.Will != nil {
		t.Errorf("session = %+v", got)
	}
	if m := c.Messages[0]; m == nil || !m.Expiry.IsZero() || len(m.Payload) != 0 || m.Props.PayloadFormat != nil {
		t.Errorf("message = %+v", m)
	}
	if len(c.Subscriptions["z"]) != 1 || len(c.Outbound["z"]) != 1 || len(c.Retained) != 1 {
		t.Errorf("got %+v", c)
	}
}

func testOverwrite(t *testing.T, s store.Store) {
	defer s.Close()
	b := s.NewBatch()
	fill(b, "c", 1)
	commit(t, b, true)

	sess := FullSession("c")
	sess.Will = nil
	sess.ExpiryInterval = 10
	m := FullMessage(2)
	m.Topic = FullMessage(1).Topic
	sub := FullSubscription("sensors/+/temp")
	sub.Options.QoS, sub.ID = 0, 0
	o := FullOutbound(1)
	o.State, o.PacketID = store.Queued, 0
	b = s.NewBatch()
	b.PutSession(sess)
	b.PutMessage(1, m)
	b.PutSubscription("c", sub)
	b.PutOutbound("c", 1, o)
	b.PutInbound("c", 1)
	b.PutRetained(m)
	commit(t, b, true)

	c := LoadAll(t, s)
	if !Equal(c.Session("c"), sess) || !Equal(c.Messages[1], m) || !Equal(c.Outbound["c"][1], o) {
		t.Errorf("overwrite not seen: %+v", c)
	}
	if len(c.Subscriptions["c"]) != 2 || !Equal(c.Subscriptions["c"][1], sub) {
		t.Errorf("subscriptions = %+v", c.Subscriptions["c"])
	}
	if !slices.Equal(c.Inbound["c"], []uint16{1, 65535}) {
		t.Errorf("inbound = %v", c.Inbound["c"])
	}
	if len(c.Retained) != 1 || !Equal(c.Retained[0], m) {
		t.Errorf("retained = %+v", c.Retained)
	}
}

func testDelete(t *testing.T, s store.Store) {
	defer s.Close()
	b := s.NewBatch()
	fill(b, "c", 1)
	commit(t, b, true)
	b = s.NewBatch()
	b.DeleteMessage(1)
	b.DeleteSubscription("c", "sensors/+/temp")
	b.DeleteOutbound("c", 1)
	b.DeleteInbound("c", 65535)
	b.DeleteRetained(FullMessage(1).Topic)
	// Deleting what is not there is not an error.
	b.DeleteMessage(1000)
	b.DeleteSubscription("nobody", "x")
	b.DeleteOutbound("nobody", 1)
	b.DeleteInbound("nobody", 1)
	b.DeleteRetained("no/such/topic")
	commit(t, b, true)
	c := LoadAll(t, s)
	if len(c.Messages) != 0 || len(c.Retained) != 0 {
		t.Errorf("messages %v, retained %v: want none", c.Messages, c.Retained)
	}
	if subs := c.Subscriptions["c"]; len(subs) != 1 || subs[0].Filter != "$share/g1/sensors/#" {
		t.Errorf("subscriptions = %+v", subs)
	}
	if _, ok := c.Outbound["c"][1]; ok || len(c.Outbound["c"]) != 1 {
		t.Errorf("outbound = %+v", c.Outbound["c"])
	}
	if !slices.Equal(c.Inbound["c"], []uint16{1}) {
		t.Errorf("inbound = %v", c.Inbound["c"])
	}
	if c.Session("c") == nil {
		t.Error("session gone")
	}
}

// Client IDs chosen so that a prefix-based delete that forgot the separator
// would catch its neighbours.
var neighbours = []string{"a", "ab", "a/b", "a\x01", "b", "A", "aa"}

func testDeleteSession(t *testing.T, s store.Store) {
	defer s.Close()
	b := s.NewBatch()
	for i, id := range neighbours {
		fill(b, id, uint64(i+1))
	}
	commit(t, b, true)
	b = s.NewBatch()
	b.DeleteSession("a")
	b.DeleteSession("never-existed")
	commit(t, b, true)
	c := LoadAll(t, s)
	if c.Session("a") != nil || c.Subscriptions["a"] != nil || c.Outbound["a"] != nil || c.Inbound["a"] != nil {
		t.Errorf("client a still has records: %+v", c)
	}
	for i, id := range neighbours[1:] {
		checkFull(t, c, id, uint64(i+2))
	}
	// Messages and retained messages are not the session's.
	if len(c.Messages) != len(neighbours) || len(c.Retained) != len(neighbours) {
		t.Errorf("%d messages, %d retained: want %d each", len(c.Messages), len(c.Retained), len(neighbours))
	}
	// A session written again after its delete, in the same batch, is there.
	b = s.NewBatch()
	b.DeleteSession("ab")
	b.PutSession(FullSession("ab"))
	b.PutInbound("ab", 7)
	commit(t, b, true)
	c = LoadAll(t, s)
	if c.Session("ab") == nil || !slices.Equal(c.Inbound["ab"], []uint16{7}) || c.Subscriptions["ab"] != nil {
		t.Errorf("delete then put in one batch: session %v, inbound %v, subs %v", c.Session("ab"), c.Inbound["ab"], c.Subscriptions["ab"])
	}
}

func testLoadOrder(t *testing.T, s store.Store) {
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var ids []string
	for i := range 50 {
		ids = append(ids, fmt.Sprintf("c%d", rng.IntN(1000))+string(rune('a'+i%26)))
	}
	b := s.NewBatch()
	for _, i := range rng.Perm(len(ids)) {
		id := ids[i]
		b.PutRetained(&store.Message{Topic: "t/" + id})
		b.PutInbound(id, uint16(rng.IntN(70000)))
		b.PutOutbound(id, rng.Uint64(), &store.Outbound{})
		b.PutOutbound(id, uint64(rng.IntN(300)), &store.Outbound{})
		b.PutSubscription(id, &store.Subscription{Filter: "f/" + id})
		b.PutMessage(rng.Uint64(), &store.Message{})
		b.PutMessage(uint64(rng.IntN(300)), &store.Message{})
		b.PutSession(&store.Session{ClientID: id})
	}
	commit(t, b, false)
	c := LoadAll(t, s)
	// Sessions first, then messages, then the rest.
	last := 0
	rank := map[byte]int{'s': 0, 'm': 1, 'b': 2, 'o': 2, 'i': 2, 'r': 2}
	for i, k := range c.Kinds {
		if rank[k] < last {
			t.Fatalf("record %d of kind %c after a later kind: %s", i, k, c.Kinds)
		}
		last = rank[k]
	}
	if !slices.IsSortedFunc(c.Sessions, func(a, b *store.Session) int { return cmpStr(a.ClientID, b.ClientID) }) {
		t.Error("sessions not in client ID order")
	}
	if !slices.IsSorted(c.MessageOrder) {
		t.Error("messages not in numeric ID order")
	}
	if !slices.IsSortedFunc(c.Retained, func(a, b *store.Message) int { return cmpStr(a.Topic, b.Topic) }) {
		t.Error("retained not in topic order")
	}
	for id, pids := range c.Inbound {
		if !slices.IsSorted(pids) {
			t.Errorf("inbound of %s not in packet ID order: %v", id, pids)
		}
	}
	// Outbound in sequence order per client: check through a second Load.
	var prev = map[string]uint64{}
	err := s.Load(store.Visitor{Outbound: func(id string, seq uint64, _ *store.Outbound) error {
		if p, ok := prev[id]; ok && seq <= p {
			return fmt.Errorf("outbound of %s: %d after %d", id, seq, p)
		}
		prev[id] = seq
		return nil
	}})
	if err != nil {
		t.Error(err)
	}
	if len(c.Sessions) != len(ids) {
		t.Errorf("%d sessions, want %d", len(c.Sessions), len(ids))
	}
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testVisitorError(t *testing.T, s store.Store) {
	defer s.Close()
	b := s.NewBatch()
	fill(b, "a", 1)
	fill(b, "b", 2)
	commit(t, b, true)
	stop := errors.New("stop")
	n := 0
	err := s.Load(store.Visitor{Session: func(*store.Session) error { n++; return stop }})
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Load = %v after %d calls, want the visitor's error after 1", err, n)
	}
	// Only the kinds asked for are visited.
	n = 0
	err = s.Load(store.Visitor{Inbound: func(string, uint16) error { n++; return nil }})
	if err != nil || n != 4 {
		t.Errorf("Load = %v, %d inbound, want 4", err, n)
	}
}

func testBatchOrder(t *testing.T, s store.Store) {
	defer s.Close()
	// Within a batch, later changes win.
	b := s.NewBatch()
	b.PutMessage(1, FullMessage(1))
	b.DeleteMessage(1)
	b.PutMessage(2, FullMessage(1))
	b.DeleteMessage(2)
	b.PutMessage(2, FullMessage(2))
	b.PutInbound("c", 5)
	b.DeleteSession("c")
	commit(t, b, false)
	// Across batches too, in Commit order.
	for i := range 20 {
		b = s.NewBatch()
		b.PutRetained(&store.Message{Topic: "t", Payload: []byte{byte(i)}})
		commit(t, b, i%2 == 0)
	}
	c := LoadAll(t, s)
	if _, ok := c.Messages[1]; ok || !Equal(c.Messages[2], FullMessage(2)) {
		t.Errorf("messages = %+v", c.Messages)
	}
	if len(c.Inbound["c"]) != 0 {
		t.Errorf("inbound = %v", c.Inbound)
	}
	if len(c.Retained) != 1 || c.Retained[0].Payload[0] != 19 {
		t.Errorf("retained = %+v", c.Retained)
	}
}

// testAtomicVisibility: a Load concurrent with commits sees each batch whole
// or not at all.
func testAtomicVisibility(t *testing.T, s store.Store) {
	defer s.Close()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= 300; i++ {
			b := s.NewBatch()
			b.PutMessage(i, &store.Message{Topic: "x"})
			b.PutOutbound("c", i, &store.Outbound{MessageID: i})
			b.PutRetained(&store.Message{Topic: fmt.Sprint(i)})
			if err := b.Commit(false); err != nil {
				t.Error(err)
				break
			}
		}
		close(done)
	}()
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		default:
		}
		c, err := Load(s)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Messages) != len(c.Outbound["c"]) || len(c.Messages) != len(c.Retained) {
			t.Fatalf("half a batch visible: %d messages, %d outbound, %d retained", len(c.Messages), len(c.Outbound["c"]), len(c.Retained))
		}
	}
	wg.Wait()
}

func testConcurrentCommits(t *testing.T, s store.Store) {
	defer s.Close()
	const writers, each = 64, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("client-%d", w)
			for i := range each {
				b := s.NewBatch()
				seq := uint64(w*each + i)
				b.PutSession(&store.Session{ClientID: id, ExpiryInterval: uint32(i)})
				b.PutMessage(seq, FullMessage(int(seq)))
				b.PutOutbound(id, uint64(i), FullOutbound(seq))
				if err := b.Commit(i%2 == 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c := LoadAll(t, s)
	if len(c.Sessions) != writers || len(c.Messages) != writers*each {
		t.Fatalf("%d sessions, %d messages; want %d, %d", len(c.Sessions), len(c.Messages), writers, writers*each)
	}
	for _, sess := range c.Sessions {
		if sess.ExpiryInterval != each-1 || len(c.Outbound[sess.ClientID]) != each {
			t.Errorf("%s: expiry %d, %d outbound", sess.ClientID, sess.ExpiryInterval, len(c.Outbound[sess.ClientID]))
		}
	}
}

func testClosed(t *testing.T, s store.Store) {
	pending := s.NewBatch()
	pending.PutMessage(1, FullMessage(1))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := pending.Commit(true); err == nil {
		t.Error("Commit of a batch made before Close succeeded after Close")
	}
	b := s.NewBatch()
	b.PutMessage(2, FullMessage(2))
	if err := b.Commit(false); err == nil {
		t.Error("Commit after Close succeeded")
	}
	if err := s.Load(store.Visitor{Message: func(uint64, *store.Message) error { return nil }}); err == nil {
		t.Error("Load after Close succeeded")
	}
	_ = s.Close() // a second Close must not panic; its error is the implementation's choice
}

// RunDurable runs the tests of a store that keeps its data across Close:
// open(t, dir) opens the store in dir, creating it when missing.
func RunDurable(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	t.Run("Reopen", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		b := s.NewBatch()
		for i, id := range neighbours {
			fill(b, id, uint64(i+1))
		}
		commit(t, b, true)
		b = s.NewBatch()
		b.DeleteSession("a")
		b.DeleteMessage(1)
		b.DeleteRetained(FullMessage(2).Topic)
		commit(t, b, false) // unsynced, but Close keeps it
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t, dir)
		defer s.Close()
		c := LoadAll(t, s)
		if c.Session("a") != nil || c.Outbound["a"] != nil || c.Messages[1] != nil || c.RetainedByTopic(FullMessage(2).Topic) != nil {
			t.Error("a delete was lost across Close")
		}
		c.Retained = append(c.Retained, FullMessage(2)) // deleted above; checkFull looks for it
		for i, id := range neighbours[1:] {
			checkFull(t, c, id, uint64(i+2))
		}
	})
	t.Run("AtomicAcrossReopen", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		big := s.NewBatch()
		for i := range 5000 {
			big.PutMessage(uint64(i), FullMessage(i))
			big.PutOutbound("c", uint64(i), FullOutbound(uint64(i)))
		}
		commit(t, big, true)
		never := s.NewBatch() // not committed: none of it may appear
		never.PutSession(FullSession("ghost"))
		never.PutMessage(99999, FullMessage(1))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t, dir)
		defer s.Close()
		c := LoadAll(t, s)
		if len(c.Messages) != 5000 || len(c.Outbound["c"]) != 5000 {
			t.Errorf("%d messages, %d outbound: want 5000 each", len(c.Messages), len(c.Outbound["c"]))
		}
		if c.Session("ghost") != nil || c.Messages[99999] != nil {
			t.Error("an uncommitted batch appeared")
		}
	})
}

// A session's taken records round-trip, a slot written again holds the
// newer record, and DeleteSession clears them with the session.
func testTaken(t *testing.T, s store.Store) {
	defer s.Close()
	x := func(n uint64) store.Taken {
		return store.Taken{Origin: store.Origin{Instance: 1 << 63, Seq: n}, N: n}
	}
	b := s.NewBatch()
	b.PutSession(FullSession("a"))
	b.PutSession(FullSession("ab"))
	b.PutTaken("a", 0, x(1))
	b.PutTaken("a", 65535, x(2))
	b.PutTaken("ab", 0, x(3))
	commit(t, b, true)
	b = s.NewBatch()
	b.PutTaken("a", 0, x(4))
	commit(t, b, true)
	c := LoadAll(t, s)
	if got := c.Taken["a"]; len(got) != 2 || got[0] != x(4) || got[65535] != x(2) {
		t.Errorf("taken of a = %v, want slot 0 %v and slot 65535 %v", got, x(4), x(2))
	}
	b = s.NewBatch()
	b.DeleteSession("a")
	commit(t, b, true)
	c = LoadAll(t, s)
	if c.Taken["a"] != nil || c.Taken["ab"][0] != x(3) {
		t.Errorf("after deleting a: taken %v", c.Taken)
	}
}
