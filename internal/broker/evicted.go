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
	// evictedMax bounds the origins kept over all evicted sessions; past
	// it the older ones are forgotten (duplicates then, not losses).
	evictedMax = 1 << 20
)

// evictedMemory holds, by client ID, the origins of the messages evicted
// sessions' clients had acknowledged. Its zero value is empty.
type evictedMemory struct {
	by map[string]evictedSession
	n  int // origins held in by
}

type evictedSession struct {
	origins []session.Origin // oldest first
	at      time.Time
}

// keep notes what the session of clientID, evicted at now, had taken
// (remembered, oldest first) and no longer held: its client acknowledged
// it. What it still held follows the session by another path.
func (e *evictedMemory) keep(clientID string, remembered []session.Origin, held map[session.Origin]bool, now time.Time) {
	acked := make([]session.Origin, 0, len(remembered))
	for _, o := range remembered {
		if !held[o] {
			acked = append(acked, o)
		}
	}
	if len(acked) == 0 {
		return
	}
	e.forget(clientID)
	for id, s := range e.by {
		if now.Sub(s.at) >= evictedFor {
			e.forget(id)
		}
	}
	for id := range e.by {
		if e.n+len(acked) <= evictedMax {
			break
		}
		e.forget(id)
	}
	if e.by == nil {
		e.by = make(map[string]evictedSession)
	}
	e.by[clientID] = evictedSession{origins: acked, at: now}
	e.n += len(acked)
}

// take returns, and forgets, what an evicted session of clientID had
// acknowledged, unless that is older than evictedFor.
func (e *evictedMemory) take(clientID string, now time.Time) []session.Origin {
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

func (e *evictedMemory) forget(clientID string) {
	if s, ok := e.by[clientID]; ok {
		e.n -= len(s.origins)
		delete(e.by, clientID)
	}
}
