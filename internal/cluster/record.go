package cluster

// Session records: a session's owner, subscriptions and will, written to
// the replicated sessions bucket by one loop per node, coalesced per client.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/starling-mqtt/starling/internal/broker"
)

// SessionChanged records a session's subscriptions and will, if this node
// still owns it. Changes to one session coalesce: only the latest is
// written.
func (n *Node) SessionChanged(s *broker.SessionSnapshot) { n.queueSession(s.Session.ClientID, s) }

// SessionEnded forgets a session this node owned, unless it is back.
func (n *Node) SessionEnded(id string) { n.queueSession(id, nil) }

func (n *Node) queueSession(id string, s *broker.SessionSnapshot) {
	n.kvMu.Lock()
	if _, ok := n.sessionQueue[id]; !ok {
		n.sessionOrder = append(n.sessionOrder, id)
	}
	n.sessionQueue[id] = s
	n.kvMu.Unlock()
	n.signalKV()
}

// writeSession applies the latest queued change of one session.
func (n *Node) writeSession(ctx context.Context, id string, s *broker.SessionSnapshot) {
	e, err := n.sessions.Get(ctx, key(id))
	if s == nil {
		if err != nil || n.b.HasSession(id) {
			return // gone already, or the client reconnected here meanwhile
		}
		var r record
		if json.Unmarshal(e.Value(), &r) != nil || r.Node != n.cfg.Node {
			return
		}
		n.forgetMemory(id)
		n.sessions.Delete(ctx, key(id), jetstream.LastRevision(e.Revision()))
		return
	}
	val := mustJSON(record{Node: n.cfg.Node, Session: s})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		_, err = n.sessions.Create(ctx, key(id), val)
	case err == nil:
		var r record
		if json.Unmarshal(e.Value(), &r) == nil && r.Node != n.cfg.Node {
			return // taken over meanwhile
		}
		_, err = n.sessions.Update(ctx, key(id), val, e.Revision())
	}
	if isRevisionMismatch(err) {
		// The read was stale (a replica behind the leader) or raced
		// another write: written again shortly, unless a newer change
		// is queued by then. Dropping it would leave the record without
		// the session, which then cannot be recovered if this node dies.
		n.kvMu.Lock()
		if _, ok := n.sessionQueue[id]; !ok {
			n.sessionQueue[id] = s
			n.sessionOrder = append(n.sessionOrder, id)
		}
		n.kvMu.Unlock()
		time.AfterFunc(50*time.Millisecond, n.signalKV)
		return
	}
	if err != nil {
		n.log.Warn("cluster: record session", "client_id", id, "err", err)
	}
}

func (n *Node) signalKV() {
	wake(n.kvSignal)
}

// kvLoop writes queued changes to the buckets, once they exist: retained
// messages (retried with backoff), then the latest change of each session.
func (n *Node) kvLoop() {
	defer n.wg.Done()
	select {
	case <-n.ctx.Done():
		return
	case <-n.ready:
	}
	var retryAt time.Time // retained writes wait until then after a failure
	for {
		if !time.Now().Before(retryAt) {
			retryAt = time.Time{}
			if d := n.writeRetained(); d > 0 {
				retryAt = time.Now().Add(d)
			}
		}
		n.kvMu.Lock()
		queue, order := n.sessionQueue, n.sessionOrder
		n.sessionQueue, n.sessionOrder = make(map[string]*broker.SessionSnapshot), nil
		n.kvMu.Unlock()
		for _, id := range order {
			ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
			n.writeSession(ctx, id, queue[id])
			cancel()
		}
		var wait <-chan time.Time
		if !retryAt.IsZero() {
			wait = time.After(time.Until(retryAt))
		}
		select {
		case <-n.ctx.Done():
			return
		case <-n.kvSignal:
		case <-wait:
		}
	}
}

// isRevisionMismatch reports a lost compare-and-set: the key changed (a
// single replica reports 10071, replicated buckets 10164).
func isRevisionMismatch(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("cluster: encode %T: %v", v, err)) // our own types always encode
	}
	return b
}
