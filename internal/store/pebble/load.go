package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/starling-mqtt/starling/internal/store"
)

// Load reads a consistent snapshot (one pebble iterator) in key order, which
// is the contract's order: sessions, messages, subscriptions, outbound,
// inbound, retained. A value Load cannot decode (an unknown format version,
// corruption) stops it with an error naming the record.
//
// The store's read lock is held while the visitor runs, so Close and a
// reopen after a write failure wait for Load to end. A visitor must not call
// Close; it should not Commit either (the broker commits after Load): such a
// Commit would wait forever if a Close or reopen started meanwhile.
func (s *Store) Load(v store.Visitor) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("store: load: %w", store.ErrClosed)
	}
	if s.db == nil {
		return fmt.Errorf("store: load: unavailable after a write failure: %w", s.broken)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindSession}, UpperBound: []byte{0xFF}})
	if err != nil {
		return fmt.Errorf("store: load: %w", err)
	}
	err = load(it, v)
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("store: load: %w", cerr)
	}
	return err
}

func load(it *pebble.Iterator, v store.Visitor) error {
	for valid := it.First(); valid; {
		k := it.Key()
		kind := k[0]
		var skipTo byte
		switch kind {
		case kindSession:
			if v.Session == nil {
				skipTo = kind + 1
			}
		case kindMessage:
			if v.Message == nil {
				skipTo = kind + 1
			}
		case kindSubscription:
			if v.Subscription == nil {
				skipTo = kind + 1
			}
		case kindOutbound:
			if v.Outbound == nil {
				skipTo = kind + 1
			}
		case kindInbound:
			if v.Inbound == nil {
				skipTo = kind + 1
			}
		case kindRetained:
			if v.Retained == nil {
				skipTo = kind + 1
			}
		case kindTaken:
			if v.Taken == nil {
				skipTo = kind + 1
			}
		default:
			return fmt.Errorf("store: load: a record of unknown kind 0x%02x (key %q): written by a newer Starling?", kind, k)
		}
		if skipTo != 0 {
			valid = it.SeekGE([]byte{skipTo})
			continue
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("store: load: key %q: %w", k, err)
		}
		if err := visit(v, k, val); err != nil {
			return err
		}
		valid = it.Next()
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: load: %w", err)
	}
	return nil
}

// loadError marks a record Load cannot read, as opposed to a visitor error.
type loadError struct{ err error }

func (e loadError) Error() string { return e.err.Error() }
func (e loadError) Unwrap() error { return e.err }

func bad(k []byte, err error) error {
	return loadError{fmt.Errorf("store: load: record %q: %w", k, err)}
}

// visit decodes one record and calls its visitor; the visitor's error is
// returned as is.
func visit(v store.Visitor, k, val []byte) error {
	kind, rest := k[0], k[1:]
	switch kind {
	case kindMessage:
		if len(rest) != 8 {
			return bad(k, errors.New("bad message key"))
		}
		m, err := decodeMessage(val)
		if err != nil {
			return bad(k, err)
		}
		return v.Message(binary.BigEndian.Uint64(rest), m)
	case kindRetained:
		m, err := decodeMessage(val)
		if err != nil {
			return bad(k, err)
		}
		m.Topic = string(rest) // the key is the truth
		return v.Retained(m)
	}
	cid, rest, err := splitClient(rest)
	if err != nil {
		return bad(k, err)
	}
	switch kind {
	case kindSession:
		if len(rest) != 0 {
			return bad(k, errors.New("bad session key"))
		}
		sess, err := decodeSession(cid, val)
		if err != nil {
			return bad(k, err)
		}
		return v.Session(sess)
	case kindSubscription:
		sub, err := decodeSubscription(string(rest), val)
		if err != nil {
			return bad(k, err)
		}
		return v.Subscription(cid, sub)
	case kindOutbound:
		if len(rest) != 8 {
			return bad(k, errors.New("bad outbound key"))
		}
		o, err := decodeOutbound(val)
		if err != nil {
			return bad(k, err)
		}
		return v.Outbound(cid, binary.BigEndian.Uint64(rest), o)
	case kindInbound:
		if len(rest) != 2 {
			return bad(k, errors.New("bad inbound key"))
		}
		if err := decodeInbound(val); err != nil {
			return bad(k, err)
		}
		return v.Inbound(cid, binary.BigEndian.Uint16(rest))
	case kindTaken:
		if len(rest) != 2 {
			return bad(k, errors.New("bad taken key"))
		}
		t, err := decodeTaken(val)
		if err != nil {
			return bad(k, err)
		}
		return v.Taken(cid, binary.BigEndian.Uint16(rest), t)
	}
	return bad(k, errors.New("unknown kind"))
}
