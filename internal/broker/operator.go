package broker

import (
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// ClientsPage returns the sessions that match (nil: all) and, when
// connected is set, are or are not connected, sorted by client ID:
// the limit of them after the first offset (limit 0: all), and how many
// matched in all. match sees the client ID, the user name and the remote
// address of the last connection; only the returned page is summarised,
// so a search over many sessions costs little more than reading their IDs.
func (b *Broker) ClientsPage(match func(id, user, remote string) bool, connected *bool, offset, limit int) ([]ClientSummary, int) {
	b.mu.Lock()
	cls := make([]*client, 0, len(b.clients))
	for _, cl := range b.clients {
		cls = append(cls, cl)
	}
	b.mu.Unlock()
	hits := cls[:0]
	for _, cl := range cls {
		if match != nil {
			var user, remote string
			if info := cl.info.Load(); info != nil {
				user, remote = info.Username, info.Remote
			}
			if !match(cl.id, user, remote) {
				continue
			}
		}
		if connected != nil {
			cl.mu.Lock()
			on := cl.conn != nil
			cl.mu.Unlock()
			if on != *connected {
				continue
			}
		}
		hits = append(hits, cl)
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].id < hits[j].id })
	total := len(hits)
	hits = hits[min(offset, total):]
	if limit > 0 && len(hits) > limit {
		hits = hits[:limit]
	}
	out := make([]ClientSummary, 0, len(hits))
	for _, cl := range hits {
		out = append(out, b.summary(cl))
	}
	return out, total
}

// DeleteSession ends a session at an operator's request: a connected
// client is disconnected (v5: DISCONNECT 0x98, administrative action), and
// the session's subscriptions, queued messages and will go with it (the
// will is discarded, not published). Its unacknowledged $share messages
// go to other members. It reports whether there was such a session.
func (b *Broker) DeleteSession(id string) bool {
	t := b.begin(false)
	b.mu.Lock()
	cl := b.clients[id]
	if cl == nil {
		b.mu.Unlock()
		return false
	}
	cl.mu.Lock()
	if cl.conn != nil {
		// As a takeover does: the handler finds its connection gone and
		// leaves the session alone.
		cl.closeConn(packet.AdministrativeAction, "session deleted by admin")
		cl.conn = nil
		cl.sess.Detach()
		cl.wakeRoomLocked()
		b.Stats.connected(cl.version, -1)
		b.clientChanged()
	}
	cl.cancelWill()
	shared := b.endSession(cl, t)
	cl.mu.Unlock()
	b.mu.Unlock()
	if err := t.commit(true); err != nil {
		b.log.Error("session delete not synced", "client_id", id, "err", err)
	}
	if len(shared) > 0 {
		b.redeliverShared(cl, shared)
	}
	return true
}

// Event is something refused or enforced that operators want to see in
// a history: a refused CONNECT, an ACL denial, a slow-consumer action.
type Event struct {
	Time     time.Time
	Kind     string // EventConnectRefused, EventPublishDenied, ...
	ClientID string
	Username string
	Remote   string
	Listener string
	Topic    string // the topic or filter of a denial
	Reason   string
}

// Kinds of Event.
const (
	EventConnectRefused  = "connect_refused"
	EventPublishDenied   = "publish_denied"
	EventSubscribeDenied = "subscribe_denied"
	EventSlowConsumer    = "slow_consumer"
	// EventOriginRefused: a WebSocket upgrade refused for its Origin (the
	// HTTP listener records it).
	EventOriginRefused = "origin_refused"
	// EventUpgradeRefused: a WebSocket upgrade refused for another reason
	// (wrong path, subprotocol, bad handshake, forwarded headers).
	EventUpgradeRefused = "upgrade_refused"
)

// eventSink holds the function SetEvents installs.
type eventSink struct{ fn atomic.Pointer[func(Event)] }

// SetEvents makes the broker call fn with every Event (nil: none). fn is
// called on the connection's goroutine, sometimes with a client's lock
// held: it must be quick and must not call back into the broker.
func (b *Broker) SetEvents(fn func(Event)) {
	if fn == nil {
		b.events.fn.Store(nil)
		return
	}
	b.events.fn.Store(&fn)
}

// emit passes e to the event sink, if any; it costs one atomic load
// without one.
func (b *Broker) emit(e Event) {
	if fn := b.events.fn.Load(); fn != nil {
		if e.Time.IsZero() {
			e.Time = b.now()
		}
		(*fn)(e)
	}
}

// refusedEvent is the Event of a refused CONNECT.
func (h *handler) refusedEvent(code packet.ReasonCode, reason string) Event {
	id, user := h.connectNames()
	return Event{Kind: EventConnectRefused, ClientID: id, Username: user, Remote: h.remoteAddr(), Listener: h.listener,
		Reason: fmt.Sprintf("0x%02x %s", byte(code), reason)}
}
