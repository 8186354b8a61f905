package broker

import (
	"net"
	"strings"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
)

// InternalClientPrefix starts the client IDs of the broker's own MQTT
// clients (bridges). Only connections handed in by HandleInternalConn may
// use it, so no network client can take over such a session.
const InternalClientPrefix = "$internal/"

// internalListener names the pseudo-listener of internal connections.
const internalListener = "$internal"

// HandleInternalConn runs a connection of one of the broker's own MQTT
// clients, such as a bridge's local side over net.Pipe: it is
// authenticated as a superuser without asking the Authenticator, and its
// client ID must start with InternalClientPrefix.
func (b *Broker) HandleInternalConn(nc net.Conn) { b.serveConn(nc, internalListener, nil) }

// internalCheck reports the refusal, if any, of client ID id on h: an
// internal ID on a network connection or the reverse.
func (h *handler) internalCheck(id string) (packet.ReasonCode, string, bool) {
	internal := h.listener == internalListener
	if strings.HasPrefix(id, InternalClientPrefix) != internal {
		return packet.ClientIDNotValid, "client identifier prefix " + InternalClientPrefix + " is reserved for the broker's own clients", false
	}
	return packet.Success, "", true
}

// SetQueueLimits gives the session of clientID its own bounds on queued
// QoS 1/2 messages (count and topic and payload bytes) instead of
// limits.max_queued_messages and limits.max_queued_bytes; a bridge keeps
// what it has to forward while its link is down. Call it before the
// session is created or restored.
func (b *Broker) SetQueueLimits(clientID string, maxQueued, maxQueuedBytes int) {
	b.qlMu.Lock()
	defer b.qlMu.Unlock()
	if b.sessionQueues == nil {
		b.sessionQueues = map[string][2]int{}
	}
	b.sessionQueues[clientID] = [2]int{maxQueued, maxQueuedBytes}
}

// sessionLimitsFor is sessionLimits with the bounds SetQueueLimits gave id.
func (b *Broker) sessionLimitsFor(id string) session.Limits {
	l := b.sessionLimits()
	b.qlMu.Lock()
	q, ok := b.sessionQueues[id]
	b.qlMu.Unlock()
	if ok {
		l.MaxQueued, l.MaxQueuedBytes = q[0], q[1]
	}
	return l
}
