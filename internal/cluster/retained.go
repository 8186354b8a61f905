package cluster

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/session"
)

// Retained messages are replicated through the retained bucket. Each node
// writes the latest change per topic (a deletion is an entry with an empty
// payload, so that it too carries its origin), retrying a failed write
// with backoff, and applies every other node's entries as the bucket's
// watch delivers them. Its own entries, echoed back, are never applied:
// the local store already holds them or something newer. While one of its
// own writes to a topic is on its way, other nodes' entries for the topic
// are ignored too: they precede that write in the bucket's order, which
// is the order every node converges to.

// retainTries bounds the attempts at one retained write (about a minute
// with retainBackoff's growth); retainBackoff is the first wait. Variables
// for tests.
var (
	retainTries   = 15
	retainBackoff = 100 * time.Millisecond
)

const maxRetainBackoff = 5 * time.Second

// retainFault, set by tests, makes a retained write fail.
var retainFault atomic.Pointer[func(topic string) error]

// retainWrite is one retained change waiting for the bucket.
type retainWrite struct {
	topic string
	val   []byte // encoded message; an empty payload deletes
	seq   uint64
	tries int
}

// Retain replicates a retained message (or, with an empty payload, its
// deletion).
func (n *Node) Retain(m *session.Message) {
	seq := n.rseq.Add(1)
	// Unnamed: a retained value is no message a session takes.
	val, err := encodeNamed(nil, header{n.instance, seq}, session.Origin{}, m)
	if err != nil {
		n.log.Warn("cluster: encode retained", "topic", m.Topic, "err", err)
		return
	}
	n.kvMu.Lock()
	if w, ok := n.retainQueue[m.Topic]; !ok {
		n.retainOrder = append(n.retainOrder, m.Topic)
	} else if w.seq > seq {
		n.kvMu.Unlock()
		return // a newer change raced ahead
	}
	n.retainQueue[m.Topic] = &retainWrite{topic: m.Topic, val: val, seq: seq}
	n.rpend[m.Topic] = max(n.rpend[m.Topic], seq)
	n.kvMu.Unlock()
	n.signalKV()
}

// writeRetained writes the queued retained changes in order. At the first
// failure it stops, keeps the rest queued and returns how long to wait
// before trying again (0 when all were written).
func (n *Node) writeRetained() time.Duration {
	n.kvMu.Lock()
	queue, order := n.retainQueue, n.retainOrder
	n.retainQueue, n.retainOrder = make(map[string]*retainWrite), nil
	n.kvMu.Unlock()
	for i, topic := range order {
		w := queue[topic]
		err := n.putRetained(w)
		if err == nil {
			continue
		}
		w.tries++
		n.kvMu.Lock()
		if w.tries >= retainTries {
			n.retainFailed.Add(1)
			n.log.Error("cluster: retained message not replicated; giving up", "topic", topic, "tries", w.tries, "err", err)
			if n.rpend[topic] == w.seq {
				delete(n.rpend, topic) // nothing of ours is on its way
			}
		} else {
			n.log.Debug("cluster: replicate retained message, will retry", "topic", topic, "tries", w.tries, "err", err)
			n.requeueLocked(w)
		}
		for _, t := range order[i+1:] {
			n.requeueLocked(queue[t])
		}
		n.kvMu.Unlock()
		return min(retainBackoff<<min(w.tries-1, 16), maxRetainBackoff)
	}
	return 0
}

// requeueLocked puts an unwritten change back, unless a newer one for its
// topic is queued; the caller holds kvMu.
func (n *Node) requeueLocked(w *retainWrite) {
	if cur, ok := n.retainQueue[w.topic]; ok {
		if cur.seq > w.seq {
			return
		}
	} else {
		n.retainOrder = append(n.retainOrder, w.topic)
	}
	n.retainQueue[w.topic] = w
}

func (n *Node) putRetained(w *retainWrite) error {
	if f := retainFault.Load(); f != nil {
		if err := (*f)(w.topic); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
	defer cancel()
	_, err := n.retained.Put(ctx, key(w.topic), w.val)
	return err
}

// applyRetained applies one entry of the retained bucket's watch.
func (n *Node) applyRetained(e jetstream.KeyValueEntry) {
	name, err := unkey(e.Key())
	if err != nil {
		return
	}
	m := &session.Message{Topic: name} // a deletion by an older version
	if e.Operation() == jetstream.KeyValuePut {
		var h header
		h, m, err = decodeMessage(e.Value())
		if err != nil || m.Topic != name {
			n.log.Warn("cluster: bad retained entry", "topic", name, "err", err)
			return
		}
		// Its header counts retained changes, not messages: it names no
		// message a session could take (session.Message.Origin).
		m.Origin = session.Origin{}
		if h.instance == n.instance {
			n.kvMu.Lock()
			if p, ok := n.rpend[name]; ok && h.seq >= p {
				delete(n.rpend, name)
			}
			n.kvMu.Unlock()
			return
		}
	}
	n.kvMu.Lock()
	_, mine := n.rpend[name]
	n.kvMu.Unlock()
	if mine {
		return // this node's newer write follows in the bucket
	}
	n.b.ApplyRetained(m)
}
