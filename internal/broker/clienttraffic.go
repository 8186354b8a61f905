package broker

import (
	"iter"
	"sync/atomic"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
)

// DroppedSlowReader returns the QoS 0 publishes dropped because a
// client read too slowly (its connection's queue was full). They are not
// in Stats.Dropped.
func (b *Broker) DroppedSlowReader() uint64 { return b.bytes.Dropped.Load() }

// QueueTotals sums inflight and queued messages over every session. It
// takes each session's lock in turn: for scrapes, not the message path.
func (b *Broker) QueueTotals() (inflight, queued int) {
	b.mu.Lock()
	cls := make([]*client, 0, len(b.clients))
	for _, cl := range b.clients {
		cls = append(cls, cl)
	}
	b.mu.Unlock()
	for _, cl := range cls {
		cl.mu.Lock()
		inflight += cl.sess.Inflight()
		queued += cl.sess.Queued()
		cl.mu.Unlock()
	}
	return inflight, queued
}

// QueueLimits returns the configured per-session queue and inflight
// limits, for slow-consumer alerts.
func (b *Broker) QueueLimits() (maxQueued, maxInflight int) {
	return b.lim.MaxQueued, int(b.lim.MaxInflight)
}

// clientTraffic counts one session's messages, for "top clients".
type clientTraffic struct {
	msgsIn, bytesIn, msgsOut, bytesOut atomic.Uint64
}

// ClientTraffic is one session's traffic since it was created.
type ClientTraffic struct {
	ClientID                                      string
	Connected                                     bool
	MessagesIn, BytesIn                           uint64
	MessagesOut, BytesOut                         uint64
	Inflight, Queued                              int
	DroppedQueue, DroppedExpired, DroppedTooLarge uint64
	Flow                                          ClientFlow
	Window                                        int // outbound window: see ClientSummary
}

// Traffics returns every session's traffic counters and queue sizes.
func (b *Broker) Traffics() []ClientTraffic {
	cls := b.clientList()
	out := make([]ClientTraffic, 0, len(cls))
	for _, cl := range cls {
		out = append(out, b.trafficOf(cl))
	}
	return out
}

// AllTraffic is Traffics one client at a time: a check that looks at each
// once (the dashboard's alerts, every tick) keeps no slice of every
// client's figures (about 150 bytes per client, made and dropped each
// tick, was resident memory of an idle broker).
func (b *Broker) AllTraffic() iter.Seq[ClientTraffic] {
	return func(yield func(ClientTraffic) bool) {
		for _, cl := range b.clientList() {
			if !yield(b.trafficOf(cl)) {
				return
			}
		}
	}
}

func (b *Broker) clientList() []*client {
	b.mu.Lock()
	defer b.mu.Unlock()
	cls := make([]*client, 0, len(b.clients))
	for _, cl := range b.clients {
		cls = append(cls, cl)
	}
	return cls
}

func (b *Broker) trafficOf(cl *client) ClientTraffic {
	ct := ClientTraffic{ClientID: cl.id, MessagesIn: cl.traffic.msgsIn.Load(), BytesIn: cl.traffic.bytesIn.Load(),
		MessagesOut: cl.traffic.msgsOut.Load(), BytesOut: cl.traffic.bytesOut.Load()}
	cl.mu.Lock()
	ct.Connected = cl.conn != nil
	ct.Inflight, ct.Queued = cl.sess.Inflight(), cl.sess.Queued()
	st := cl.sess.Stats
	ct.Flow = cl.flowLocked()
	ct.Window = b.windowOf(cl)
	cl.mu.Unlock()
	ct.DroppedQueue, ct.DroppedExpired, ct.DroppedTooLarge = st.DroppedQueueFull, st.DroppedExpired, st.DroppedTooLarge
	return ct
}

// sent counts packets handed to a client's connection: the PUBLISHes
// among them by QoS, for the broker and for the client.
func (b *Broker) sent(cl *client, ps ...packet.Packet) {
	for _, p := range ps {
		var topicName string
		var qos byte
		var retain bool
		var pid uint16
		var payload []byte
		switch p := p.(type) {
		case *session.Outgoing:
			topicName, qos, retain, pid, payload = p.Msg.Topic, p.QoS, p.Retain, p.PacketID, p.Msg.Payload
		case *packet.Publish:
			topicName, qos, retain, pid, payload = p.Topic, p.QoS, p.Retain, p.PacketID, p.Payload
		default:
			continue
		}
		b.Stats.MessagesOut.Add(1)
		b.Traffic.Out[min(qos, 2)].add(len(payload))
		if cl != nil {
			cl.traffic.msgsOut.Add(1)
			cl.traffic.bytesOut.Add(uint64(len(payload)))
		}
		if tr := b.tracer.Load(); tr != nil {
			tr.message(cl, "out", topicName, qos, retain, pid, payload)
		}
	}
}

// received counts a client's PUBLISH.
func (h *handler) received(p *packet.Publish) {
	b := h.b
	b.Stats.MessagesIn.Add(1)
	b.Traffic.In[min(p.QoS, 2)].add(len(p.Payload))
	h.cl.traffic.msgsIn.Add(1)
	h.cl.traffic.bytesIn.Add(uint64(len(p.Payload)))
}

// countDrops adds what a session dropped between two readings of its
// stats to the broker's counters, by reason. Every session call that can
// drop (a delivery, and the queue refills of a reconnect or an ack, which
// skip expired and too large messages) goes through it.
func (b *Broker) countDrops(before, after session.Stats) {
	b.dropped(before.DroppedExpired, after.DroppedExpired, &b.Traffic.DroppedExpired)
	b.dropped(before.DroppedQueueFull, after.DroppedQueueFull, &b.Traffic.DroppedQueueFull)
	b.dropped(before.DroppedTooLarge, after.DroppedTooLarge, &b.Traffic.DroppedTooLarge)
	b.dropped(before.DroppedPolicy, after.DroppedPolicy, &b.Flow.DroppedPolicy)
	b.dropped(before.DroppedOverflow, after.DroppedOverflow, &b.Flow.Overflow)
	if n := after.Conflated - before.Conflated; n > 0 {
		b.Flow.Conflated.Add(n) // replaced, not lost: not a drop
	}
}

// dropped counts what a delivery made a session drop, by reason.
func (b *Broker) dropped(before, after uint64, c *atomic.Uint64) {
	if n := after - before; n > 0 {
		c.Add(n)
		b.Stats.Dropped.Add(n)
	}
}

// ClientChanges signals, without blocking the broker, that a client
// connected or disconnected. Signals coalesce: one pending signal stands
// for any number of changes. There is one channel per broker: give it one
// reader.
func (b *Broker) ClientChanges() <-chan struct{} { return b.changes }

func (b *Broker) clientChanged() {
	select {
	case b.changes <- struct{}{}:
	default: // one is pending already
	}
}
