package broker

import (
	"time"

	"github.com/starling-mqtt/starling/internal/session"
)

// A node that was out of touch with the cluster (frozen, cut off) evicts
// the sessions another node took over meanwhile. That node recovered
// each from the queue stream, which keeps the deliveries still held but
// not the session's memory of the messages it took (session.Taken): the
// messages its client had acknowledged here are forgotten there. A late
// copy of one of them (relayed because this node's confirmation was lost
// with the fault) then reaches the session as a new message, a QoS 2
// duplicate under a new packet ID, once the client is back here and the
// session with it. So the node keeps, for a while, what each evicted
// session's client had acknowledged, and a session installed here again
// remembers it.
const (
	// evictedFor is how long an evicted session's memory is kept: past
	// the relay's retries of a late copy.
	evictedFor = 2 * time.Minute
	// evictedMax bounds the origins kept over all evicted sessions (16
	// bytes each); past it the oldest are forgotten (duplicates then, not
	// losses).
	evictedMax = 1 << 20
)

// evictedMemory holds, by client ID, the origins of the messages evicted
// sessions' clients had acknowledged. Its zero value is empty. A node
// evicts all the sessions taken over in one go, under Broker.mu: so keep
// and take cost O(1) amortised, forgetting from the front of a list in
// eviction order, not by scanning every session kept.
type evictedMemory struct {
	by    map[string]evictedSession
	order []evictedEntry // keeps, oldest first; some superseded
	n     int            // origins held in by
	seq   uint64         // keeps so far
}

type evictedSession struct {
	origins []session.Origin // oldest first
	at      time.Time
	seq     uint64 // which keep made it
}

// evictedEntry is one keep, in order; it is stale once by holds a later
// keep of its client, or none.
type evictedEntry struct {
	clientID string
	seq      uint64
}

// keep notes what the session of clientID, evicted at now, had taken
// (remembered, oldest first) and no longer held: its client acknowledged
// it. What it still held follows the session by another path.
func (e *evictedMemory) keep(clientID string, remembered []session.Origin, held map[session.Origin]bool, now time.Time) {
	n := 0
	for _, o := range remembered {
		if !held[o] {
			n++
		}
	}
	e.forget(clientID)
	if n == 0 {
		e.prune(now, 0)
		return
	}
	acked := make([]session.Origin, 0, n) // exactly: e.n counts what is held
	for _, o := range remembered {
		if !held[o] {
			acked = append(acked, o)
		}
	}
	e.prune(now, n)
	if e.by == nil {
		e.by = make(map[string]evictedSession)
	}
	e.seq++
	e.by[clientID] = evictedSession{origins: acked, at: now, seq: e.seq}
	e.order = append(e.order, evictedEntry{clientID, e.seq})
	e.n += n
}

// take returns, and forgets, what an evicted session of clientID had
// acknowledged, unless that is older than evictedFor.
func (e *evictedMemory) take(clientID string, now time.Time) []session.Origin {
	defer e.prune(now, 0)
	s, ok := e.by[clientID]
	if !ok {
		return nil
	}
	e.forget(clientID)
	if now.Sub(s.at) >= evictedFor {
		return nil
	}
	return s.origins
}

// prune forgets, oldest first, the sessions kept evictedFor or longer,
// and as many more as it takes to make room for add origins.
func (e *evictedMemory) prune(now time.Time, add int) {
	for len(e.order) > 0 {
		f := e.order[0]
		s, live := e.by[f.clientID]
		live = live && s.seq == f.seq
		if live && now.Sub(s.at) < evictedFor && e.n+add <= evictedMax {
			break
		}
		if live {
			e.forget(f.clientID)
		}
		e.order[0] = evictedEntry{}
		e.order = e.order[1:]
	}
	if len(e.order) == 0 {
		e.order = nil // let the array go once all is forgotten
	}
}

func (e *evictedMemory) forget(clientID string) {
	if s, ok := e.by[clientID]; ok {
		e.n -= len(s.origins)
		delete(e.by, clientID)
	}
}
