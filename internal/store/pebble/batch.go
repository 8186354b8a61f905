package pebble

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/starling-mqtt/starling/internal/store"
)

type opKind byte

const (
	opSet opKind = iota
	opDelete
	opDeleteRange
)

// op is one change; key and value are owned by the batch.
type op struct {
	kind       opKind
	key, value []byte // value: the range end for opDeleteRange
}

// batch collects encoded changes; Commit copies them into a pebble batch of
// whichever database is current then (it may have been reopened).
type batch struct {
	s   *Store
	ops []op
	n   int
	err error // a record that cannot be stored; returned by Commit
}

// NewBatch returns an empty batch.
func (s *Store) NewBatch() store.Batch { return &batch{s: s} }

func (b *batch) set(k, v []byte) {
	b.ops = append(b.ops, op{kind: opSet, key: k, value: v})
	b.n++
}

func (b *batch) del(k []byte) {
	b.ops = append(b.ops, op{kind: opDelete, key: k})
	b.n++
}

// checkID refuses a client ID holding the key separator (MQTT forbids
// U+0000 in strings, so the broker never passes one).
func (b *batch) checkID(clientID string) bool {
	if strings.IndexByte(clientID, sep) >= 0 {
		if b.err == nil {
			b.err = fmt.Errorf("store: client ID %q contains U+0000", clientID)
		}
		return false
	}
	return true
}

func (b *batch) PutSession(s *store.Session) {
	if b.checkID(s.ClientID) {
		b.set(sessionKey(s.ClientID), encodeSession(s))
	}
}

// DeleteSession deletes the session key and the client's ranges of
// subscriptions, outbound and inbound records.
func (b *batch) DeleteSession(clientID string) {
	if !b.checkID(clientID) {
		return
	}
	b.del(sessionKey(clientID))
	for _, k := range []byte{kindSubscription, kindOutbound, kindInbound, kindTaken} {
		start, end := clientRange(k, clientID)
		b.ops = append(b.ops, op{kind: opDeleteRange, key: start, value: end})
	}
}

func (b *batch) PutSubscription(clientID string, s *store.Subscription) {
	if b.checkID(clientID) {
		b.set(subscriptionKey(clientID, s.Filter), encodeSubscription(s))
	}
}

func (b *batch) DeleteSubscription(clientID, filter string) {
	if b.checkID(clientID) {
		b.del(subscriptionKey(clientID, filter))
	}
}

func (b *batch) PutMessage(id uint64, m *store.Message) { b.set(messageKey(id), encodeMessage(m)) }
func (b *batch) DeleteMessage(id uint64)                { b.del(messageKey(id)) }

func (b *batch) PutOutbound(clientID string, seq uint64, o *store.Outbound) {
	if b.checkID(clientID) {
		b.set(outboundKey(clientID, seq), encodeOutbound(o))
	}
}

func (b *batch) DeleteOutbound(clientID string, seq uint64) {
	if b.checkID(clientID) {
		b.del(outboundKey(clientID, seq))
	}
}

func (b *batch) PutInbound(clientID string, packetID uint16) {
	if b.checkID(clientID) {
		b.set(inboundKey(clientID, packetID), inboundValue)
	}
}

func (b *batch) DeleteInbound(clientID string, packetID uint16) {
	if b.checkID(clientID) {
		b.del(inboundKey(clientID, packetID))
	}
}

func (b *batch) PutTaken(clientID string, slot uint16, t store.Taken) {
	if b.checkID(clientID) {
		b.set(takenKey(clientID, slot), encodeTaken(t))
	}
}

func (b *batch) PutRetained(m *store.Message) { b.set(retainedKey(m.Topic), encodeMessage(m)) }
func (b *batch) DeleteRetained(topic string)  { b.del(retainedKey(topic)) }

// Len is the number of calls that changed the batch (a DeleteSession is one).
func (b *batch) Len() int {
	n := 0
	for _, o := range b.ops {
		if o.kind != opDeleteRange {
			n++
		}
	}
	return n
}

func (b *batch) fill(pb *pebble.Batch) {
	for _, o := range b.ops {
		switch o.kind {
		case opSet:
			pb.Set(o.key, o.value, nil)
		case opDelete:
			pb.Delete(o.key, nil)
		case opDeleteRange:
			pb.DeleteRange(o.key, o.value, nil)
		}
	}
}

// Commit writes the batch. With sync under policy "always" it returns once
// the WAL holding it is fsynced (concurrent commits share the fsync).
func (b *batch) Commit(sync bool) error {
	if b.err != nil {
		return b.err
	}
	s := b.s
	wo := pebble.NoSync
	if sync && s.policy == store.SyncAlways {
		wo = pebble.Sync
	}
	for {
		s.mu.RLock()
		switch {
		case s.closed:
			s.mu.RUnlock()
			return fmt.Errorf("store: commit: %w", store.ErrClosed)
		case s.opts.ReadOnly:
			s.mu.RUnlock()
			return errors.New("store: commit: the store is open read-only")
		case s.broken != nil || s.db == nil:
			s.mu.RUnlock()
			if err := s.reopen(); err != nil {
				return fmt.Errorf("store: commit: %w", err)
			}
			continue
		}
		if len(b.ops) == 0 {
			s.mu.RUnlock()
			return nil
		}
		db := s.db
		err := s.apply(b.fill, wo)
		s.mu.RUnlock()
		if err != nil {
			s.markBroken(db, err)
			return fmt.Errorf("store: commit: %w", err)
		}
		if wo == pebble.NoSync {
			s.unsynced.Store(true)
		}
		b.ops = nil
		return nil
	}
}

// reopen repairs a broken database unless another goroutine did.
func (s *Store) reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || (s.broken == nil && s.db != nil) {
		return nil // the loop in Commit sees which
	}
	return s.repair()
}
