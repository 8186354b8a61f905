// Package memory is an in-memory store.Store for tests and throwaway brokers:
// maps under a mutex, nothing survives the process. Records are deep-copied
// on Put and on Load, so neither side can alias the other's slices.
package memory

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/starling-mqtt/starling/internal/store"
)

type subKey struct{ client, filter string }
type outKey struct {
	client string
	seq    uint64
}
type inKey struct {
	client string
	id     uint16
}

// perClient holds the records keyed by one client ID, so DeleteSession
// costs what that client holds, not what the store holds.
type perClient struct {
	subs     map[string]*store.Subscription
	outbound map[uint64]*store.Outbound
	inbound  map[uint16]struct{}
	taken    map[uint16]store.Taken
}

func (p *perClient) empty() bool {
	return len(p.subs) == 0 && len(p.outbound) == 0 && len(p.inbound) == 0 && len(p.taken) == 0
}

// Store is the in-memory store. Use New.
type Store struct {
	mu       sync.RWMutex
	closed   bool
	sessions map[string]*store.Session
	messages map[uint64]*store.Message
	clients  map[string]*perClient
	retained map[string]*store.Message
}

// client returns clientID's records, created when missing.
func (s *Store) client(clientID string) *perClient {
	p := s.clients[clientID]
	if p == nil {
		p = &perClient{
			subs:     map[string]*store.Subscription{},
			outbound: map[uint64]*store.Outbound{},
			inbound:  map[uint16]struct{}{},
			taken:    map[uint16]store.Taken{},
		}
		s.clients[clientID] = p
	}
	return p
}

// tidy drops clientID's entry once it holds nothing.
func (s *Store) tidy(clientID string) {
	if p := s.clients[clientID]; p != nil && p.empty() {
		delete(s.clients, clientID)
	}
}

// New returns an empty in-memory store.
func New() store.Store {
	return &Store{
		sessions: map[string]*store.Session{},
		messages: map[uint64]*store.Message{},
		clients:  map[string]*perClient{},
		retained: map[string]*store.Message{},
	}
}

// NewBatch returns an empty batch.
func (s *Store) NewBatch() store.Batch { return &batch{s: s} }

// Close makes later Commit and Load calls fail. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// Load visits a deep copy of every record, taken under the lock and visited
// without it, so a visitor may commit batches.
func (s *Store) Load(v store.Visitor) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("store: load: %w", store.ErrClosed)
	}
	var (
		sessions []*store.Session
		messages []struct {
			id uint64
			m  *store.Message
		}
		subs []struct {
			k subKey
			s *store.Subscription
		}
		outs []struct {
			k outKey
			o *store.Outbound
		}
		ins      []inKey
		retained []*store.Message
		taken    []takenRec
	)
	if v.Session != nil {
		for _, x := range s.sessions {
			sessions = append(sessions, x.Clone())
		}
	}
	if v.Message != nil {
		for id, m := range s.messages {
			messages = append(messages, struct {
				id uint64
				m  *store.Message
			}{id, m.Clone()})
		}
	}
	for client, p := range s.clients {
		if v.Subscription != nil {
			for f, x := range p.subs {
				subs = append(subs, struct {
					k subKey
					s *store.Subscription
				}{subKey{client, f}, x.Clone()})
			}
		}
		if v.Outbound != nil {
			for seq, o := range p.outbound {
				outs = append(outs, struct {
					k outKey
					o *store.Outbound
				}{outKey{client, seq}, o.Clone()})
			}
		}
		if v.Inbound != nil {
			for id := range p.inbound {
				ins = append(ins, inKey{client, id})
			}
		}
		if v.Taken != nil {
			for slot, t := range p.taken {
				taken = append(taken, takenRec{inKey{client, slot}, t})
			}
		}
	}
	if v.Retained != nil {
		for _, m := range s.retained {
			retained = append(retained, m.Clone())
		}
	}
	s.mu.RUnlock()

	// Key order within a kind, as the pebble store's keys sort.
	slices.SortFunc(sessions, func(a, b *store.Session) int { return cmp.Compare(a.ClientID, b.ClientID) })
	slices.SortFunc(messages, func(a, b struct {
		id uint64
		m  *store.Message
	}) int {
		return cmp.Compare(a.id, b.id)
	})
	slices.SortFunc(subs, func(a, b struct {
		k subKey
		s *store.Subscription
	}) int {
		return cmp.Or(cmp.Compare(a.k.client, b.k.client), cmp.Compare(a.k.filter, b.k.filter))
	})
	slices.SortFunc(outs, func(a, b struct {
		k outKey
		o *store.Outbound
	}) int {
		return cmp.Or(cmp.Compare(a.k.client, b.k.client), cmp.Compare(a.k.seq, b.k.seq))
	})
	slices.SortFunc(ins, func(a, b inKey) int {
		return cmp.Or(cmp.Compare(a.client, b.client), cmp.Compare(a.id, b.id))
	})
	slices.SortFunc(retained, func(a, b *store.Message) int { return cmp.Compare(a.Topic, b.Topic) })
	slices.SortFunc(taken, func(a, b takenRec) int {
		return cmp.Or(cmp.Compare(a.k.client, b.k.client), cmp.Compare(a.k.id, b.k.id))
	})

	for _, x := range sessions {
		if err := v.Session(x); err != nil {
			return err
		}
	}
	for _, x := range messages {
		if err := v.Message(x.id, x.m); err != nil {
			return err
		}
	}
	for _, x := range subs {
		if err := v.Subscription(x.k.client, x.s); err != nil {
			return err
		}
	}
	for _, x := range outs {
		if err := v.Outbound(x.k.client, x.k.seq, x.o); err != nil {
			return err
		}
	}
	for _, x := range ins {
		if err := v.Inbound(x.client, x.id); err != nil {
			return err
		}
	}
	for _, x := range retained {
		if err := v.Retained(x); err != nil {
			return err
		}
	}
	for _, x := range taken {
		if err := v.Taken(x.k.client, x.k.id, x.t); err != nil {
			return err
		}
	}
	return nil
}

// takenRec is one taken record as Load hands it out.
type takenRec struct {
	k inKey
	t store.Taken
}

// batch records operations as closures over deep copies, applied under the
// store's lock by Commit.
type batch struct {
	s   *Store
	ops []func(s *Store)
}

func (b *batch) add(op func(s *Store)) { b.ops = append(b.ops, op) }

func (b *batch) PutSession(x *store.Session) {
	c := x.Clone()
	b.add(func(s *Store) { s.sessions[c.ClientID] = c })
}

func (b *batch) DeleteSession(clientID string) {
	b.add(func(s *Store) {
		delete(s.sessions, clientID)
		delete(s.clients, clientID)
	})
}

func (b *batch) PutSubscription(clientID string, x *store.Subscription) {
	c := x.Clone()
	b.add(func(s *Store) { s.client(clientID).subs[c.Filter] = c })
}

func (b *batch) DeleteSubscription(clientID, filter string) {
	b.add(func(s *Store) {
		if p := s.clients[clientID]; p != nil {
			delete(p.subs, filter)
			s.tidy(clientID)
		}
	})
}

func (b *batch) PutMessage(id uint64, m *store.Message) {
	c := m.Clone()
	b.add(func(s *Store) { s.messages[id] = c })
}

func (b *batch) DeleteMessage(id uint64) {
	b.add(func(s *Store) { delete(s.messages, id) })
}

func (b *batch) PutOutbound(clientID string, seq uint64, o *store.Outbound) {
	c := o.Clone()
	b.add(func(s *Store) { s.client(clientID).outbound[seq] = c })
}

func (b *batch) DeleteOutbound(clientID string, seq uint64) {
	b.add(func(s *Store) {
		if p := s.clients[clientID]; p != nil {
			delete(p.outbound, seq)
			s.tidy(clientID)
		}
	})
}

func (b *batch) PutInbound(clientID string, packetID uint16) {
	b.add(func(s *Store) { s.client(clientID).inbound[packetID] = struct{}{} })
}

func (b *batch) DeleteInbound(clientID string, packetID uint16) {
	b.add(func(s *Store) {
		if p := s.clients[clientID]; p != nil {
			delete(p.inbound, packetID)
			s.tidy(clientID)
		}
	})
}

func (b *batch) PutTaken(clientID string, slot uint16, t store.Taken) {
	b.add(func(s *Store) { s.client(clientID).taken[slot] = t })
}

func (b *batch) PutRetained(m *store.Message) {
	c := m.Clone()
	b.add(func(s *Store) { s.retained[c.Topic] = c })
}

func (b *batch) DeleteRetained(topic string) {
	b.add(func(s *Store) { delete(s.retained, topic) })
}

func (b *batch) Len() int { return len(b.ops) }

// Commit applies every operation under the lock, so no Load sees half a
// batch. sync is ignored: nothing here survives the process.
func (b *batch) Commit(bool) error {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("store: commit: %w", store.ErrClosed)
	}
	for _, op := range b.ops {
		op(s)
	}
	b.ops = nil
	return nil
}
