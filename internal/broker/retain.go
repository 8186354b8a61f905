package broker

import (
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

// retainStore keeps the last retained message per topic.
type retainStore struct {
	mu   sync.RWMutex
	msgs map[string]*session.Message
}

func newRetainStore() *retainStore {
	return &retainStore{msgs: make(map[string]*session.Message)}
}

// set stores a retained message; an empty payload clears the topic
// [MQTT-3.3.1-6, 3.3.1-7].
func (r *retainStore) set(m *session.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(m.Payload) == 0 {
		delete(r.msgs, m.Topic)
		return
	}
	r.msgs[m.Topic] = m
}

// undo puts back what was retained on topic before m replaced it, unless
// something replaced m since.
func (r *retainStore) undo(topic string, old, m *session.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.msgs[topic]
	if len(m.Payload) != 0 && cur != m {
		return
	}
	if len(m.Payload) == 0 && cur != nil {
		return
	}
	if old == nil {
		delete(r.msgs, topic)
		return
	}
	r.msgs[topic] = old
}

func (r *retainStore) get(topic string) *session.Message {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.msgs[topic]
}

func (r *retainStore) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.msgs)
}

// match returns the live retained messages whose topic matches filter and
// drops the expired ones it meets.
func (r *retainStore) match(filter string, now time.Time) []*session.Message {
	var out, expired []*session.Message
	r.mu.RLock()
	if !hasWildcard(filter) {
		if m, ok := r.msgs[filter]; ok {
			out = append(out, m)
		}
	} else {
		for t, m := range r.msgs {
			if topic.Match(filter, t) {
				out = append(out, m)
			}
		}
	}
	r.mu.RUnlock()
	live := out[:0]
	for _, m := range out {
		if m.Expired(now) {
			expired = append(expired, m)
			continue
		}
		live = append(live, m)
	}
	if len(expired) > 0 {
		r.mu.Lock()
		for _, m := range expired {
			if r.msgs[m.Topic] == m {
				delete(r.msgs, m.Topic)
			}
		}
		r.mu.Unlock()
	}
	return live
}

func hasWildcard(f string) bool {
	for i := 0; i < len(f); i++ {
		if f[i] == '+' || f[i] == '#' {
			return true
		}
	}
	return false
}
