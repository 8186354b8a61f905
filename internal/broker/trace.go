package broker

import (
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/topic"
)

// TraceEvent is one packet seen by a trace.
type TraceEvent struct {
	Time      time.Time
	ClientID  string
	Direction string // "in" (from the client) or "out" (to it)
	Type      string // PUBLISH, SUBSCRIBE, PINGREQ...
	Topic     string // PUBLISH only
	QoS       byte
	Retain    bool
	PacketID  uint16
	Size      int // payload bytes
	Payload   []byte
}

// Trace collects the packets of one client, or the PUBLISHes on topics
// matching one filter, into a bounded buffer. At most Rate events a
// second are kept; the rest are counted in Dropped.
type Trace struct {
	ClientID string // trace this client's packets, or
	Filter   string // PUBLISHes whose topic matches this filter
	Rate     int    // events per second kept; default 50

	mu      sync.Mutex
	events  []TraceEvent
	window  time.Time
	inWin   int
	dropped uint64
}

// maxTraceEvents bounds what a trace holds between two Drain calls.
const maxTraceEvents = 200

// maxTracePayload bounds the payload bytes kept per event.
const maxTracePayload = 256

// SetTrace starts tracing with t, replacing any trace; nil stops it.
// Without a trace, each packet costs one atomic load.
func (b *Broker) SetTrace(t *Trace) {
	if t != nil && t.Rate <= 0 {
		t.Rate = 50
	}
	b.tracer.Store(t)
}

// CurrentTrace returns the running trace, or nil.
func (b *Broker) CurrentTrace() *Trace { return b.tracer.Load() }

// Drain takes the events collected since the last call and the number
// dropped by the rate limit or the bound.
func (t *Trace) Drain() ([]TraceEvent, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ev, d := t.events, t.dropped
	t.events, t.dropped = nil, 0
	return ev, d
}

func (t *Trace) add(e TraceEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Time.Sub(t.window) >= time.Second {
		t.window, t.inWin = e.Time, 0
	}
	if t.inWin >= t.Rate || len(t.events) >= maxTraceEvents {
		t.dropped++
		return
	}
	t.inWin++
	if len(e.Payload) > maxTracePayload {
		e.Payload = e.Payload[:maxTracePayload]
	}
	e.Payload = append([]byte(nil), e.Payload...)
	t.events = append(t.events, e)
}

// packet traces a packet read from cl (PUBLISH aside).
func (t *Trace) packet(cl *client, p packet.Packet) {
	if _, ok := p.(*packet.Publish); ok {
		return // traced by onPublish, with its topic alias resolved
	}
	if t.ClientID == "" || cl == nil || cl.id != t.ClientID {
		return
	}
	e := TraceEvent{Time: time.Now(), ClientID: cl.id, Direction: "in", Type: packetName(p.Type())}
	switch p := p.(type) {
	case *packet.Subscribe:
		e.PacketID = p.PacketID
		if len(p.Subscriptions) > 0 {
			e.Topic = p.Subscriptions[0].Filter
		}
	case *packet.Unsubscribe:
		e.PacketID = p.PacketID
		if len(p.Filters) > 0 {
			e.Topic = p.Filters[0]
		}
	case *packet.Ack:
		e.PacketID = p.PacketID
	}
	t.add(e)
}

func (t *Trace) message(cl *client, dir, name string, qos byte, retain bool, pid uint16, payload []byte) {
	id := ""
	if cl != nil {
		id = cl.id
	}
	if t.ClientID != "" {
		if id != t.ClientID {
			return
		}
	} else if !topic.Match(t.Filter, name) {
		return
	}
	t.add(TraceEvent{Time: time.Now(), ClientID: id, Direction: dir, Type: "PUBLISH", Topic: name, QoS: qos,
		Retain: retain, PacketID: pid, Size: len(payload), Payload: payload})
}
