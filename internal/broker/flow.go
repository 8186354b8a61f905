package broker

// Flow control: a full queue slows its publishers instead of dropping what
// they were acknowledged for (docs/flow-control.md).
//
// A connected session whose window and queue are full (session.Full, or
// conn.Full for QoS 0) is "blocking". A publish that reached blocking
// sessions starts a hold on its connection: its PUBACK/PUBREC, and those
// of the publishes after it, wait in the hold until each of those sessions
// has room again; a goroutine (awaitRoom) waits for that and then sends
// them in order. The connection's reader goes on reading acknowledgements,
// pings and the like, and stops (stalls) at the next QoS 0 PUBLISH, or at
// a QoS 1/2 PUBLISH once maxHeldAcks are held, until the hold is released:
// TCP then pushes back on the client.
//
// A stalled reader does not read its client's acknowledgements of its own
// subscriptions, so a session behind a stalled reader cannot make room. A
// reader that stalls therefore first stops waiting for sessions whose
// readers are stalled (under Broker.holdMu, which orders stalls): whoever
// stalls second sees the first, and no cycle of waits can form.
//
// A session that takes no message for slow_consumer.timeout while it
// blocks meets the slow-consumer policy: disconnect, drop_newest or
// drop_oldest. So no stuck client holds a publisher longer than that.
//
// Lock order: handler's hold.mu is taken after Broker.holdMu and before
// client.mu and conn's lock; nothing else is taken under it.

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/conn"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

// maxHeldAcks is how many acknowledgements a hold keeps before the
// connection's reader stops reading: a client with a large window of
// unacknowledged publishes is not read further than this ahead.
const maxHeldAcks = 64

// flowPolicy is the broker's flow-control configuration (SetFlow).
type flowPolicy struct {
	timeout  time.Duration
	shed     session.Overflow // session.Hold means disconnect
	minRate  float64
	latest   []config.LatestValueRule
	maxTotal int64
}

// FlowStats counts what flow control did, broker-wide.
type FlowStats struct {
	Holds          atomic.Uint64 // publishes whose acknowledgement waited for room
	HeldNanos      atomic.Int64  // time publishers spent held, summed
	Stalls         atomic.Uint64 // times a publisher's reader stopped reading
	SlowDisconnect atomic.Uint64 // slow-consumer policy: disconnects
	SlowShed       atomic.Uint64 // slow-consumer policy: drop policies put in force
	DroppedPolicy  atomic.Uint64 // messages dropped under drop_newest / drop_oldest
	Overflow       atomic.Uint64 // messages dropped past a held queue's hard limit
	Conflated      atomic.Uint64 // queued messages replaced by a newer one of their topic
	GlobalWaits    atomic.Uint64 // publishes held for the broker-wide queued-bytes bound
}

// SetFlow configures the slow-consumer policy, latest-value rules and the
// broker-wide bound. Call before serving.
func (b *Broker) SetFlow(sc config.SlowConsumer, latest []config.LatestValueRule, maxTotal int64) {
	p := flowPolicy{timeout: sc.Timeout, minRate: sc.MinRate, latest: latest, maxTotal: maxTotal}
	switch sc.Policy {
	case "drop_newest":
		p.shed = session.DropNewest
	case "drop_oldest":
		p.shed = session.DropOldest
	}
	if p.timeout <= 0 {
		p.timeout = config.Default().SlowConsumer.Timeout
	}
	b.flow = p
}

// clientFlow is a client's flow-control state.
type clientFlow struct {
	// wait is the state of the publishers' waits for room in this client,
	// under client.mu; made the first time one waits (waitLocked): most
	// clients never hold a publisher, and every client record, idle ones
	// included, holds this struct (TestClientSizeBudget).
	wait     *flowWait
	waiting  atomic.Bool   // room is set: someone waits
	shedding atomic.Bool   // a drop policy is in force until it takes a message
	stalled  atomic.Bool   // its connection's reader waits for room elsewhere
	lastTake atomic.Int64  // UnixNano: when it last acknowledged a QoS 1/2 message
	lastByte atomic.Int64  // UnixNano: when its socket last took bytes (QoS 0 progress)
	taken    atomic.Uint64 // messages it took

	heldNanos atomic.Int64  // time publishers spent waiting for it
	actions   atomic.Uint64 // slow-consumer policy actions against it
	sampled   atomic.Uint64 // sampled deliveries replaced by a newer one
}

// flowWait is a client's state while publishers wait for room in it.
type flowWait struct {
	room  chan struct{} // closed when it has room; nil when no one waits
	since time.Time     // when room was made, the wait began
	// min_rate's window: it runs while the client keeps blocking (a gap
	// of a whole timeout starts a new one), across waits.
	rateFrom    time.Time
	rateTaken   uint64 // taken at rateFrom
	lastBlocked time.Time
	cut         *conn.Conn // the connection the policy disconnected
}

// waitLocked is the client's wait state, made on first use. The caller
// holds client.mu.
func (f *clientFlow) waitLocked() *flowWait {
	if f.wait == nil {
		f.wait = new(flowWait)
	}
	return f.wait
}

// cutLocked is the connection the slow-consumer policy disconnected, nil
// if none. The caller holds client.mu.
func (f *clientFlow) cutLocked() *conn.Conn {
	if f.wait == nil {
		return nil
	}
	return f.wait.cut
}

// roomLocked is the channel closed when the client has room, nil when no
// one waits. The caller holds client.mu.
func (f *clientFlow) roomLocked() chan struct{} {
	if f.wait == nil {
		return nil
	}
	return f.wait.room
}

// blocksLocked reports whether cl's connected session is full, so that
// publishers feeding it are held. The caller holds cl.mu.
func (cl *client) blocksLocked() bool {
	c := cl.conn
	if c == nil || cl.ended || cl.flow.shedding.Load() || cl.flow.cutLocked() == c {
		return false
	}
	return cl.sess.Full() || c.Full()
}

// lastProgressLocked is when cl last made the progress that would give it
// room: an acknowledgement while its QoS 1/2 queue is full (reading QoS 0
// messages meanwhile does not empty it), else bytes taken by its socket.
// The caller holds cl.mu.
func (cl *client) lastProgressLocked() time.Time {
	if cl.sess.Full() {
		return time.Unix(0, cl.flow.lastTake.Load())
	}
	return time.Unix(0, max(cl.flow.lastTake.Load(), cl.flow.lastByte.Load()))
}

// tookLocked records that cl took n messages (ack: by acknowledging a
// QoS 1/2 one): progress. A drop policy in force ends, unless only QoS 0
// moved while the QoS 1/2 queue stays full; and publishers waiting for
// room are woken if there is room. The caller holds cl.mu.
func (b *Broker) tookLocked(cl *client, n int, ack bool) {
	if ack {
		cl.flow.lastTake.Store(b.now().UnixNano())
	}
	cl.flow.taken.Add(uint64(n))
	if cl.flow.shedding.Load() && (ack || !cl.sess.Full()) {
		cl.flow.shedding.Store(false)
		cl.sess.Overflow = session.Hold
		if cl.conn != nil {
			cl.conn.SetShed(conn.ShedNone)
		}
	}
	if cl.flow.waiting.Load() && !cl.blocksLocked() {
		cl.wakeRoomLocked()
	}
}

// tookQoS0 is conn.Owner.Took: the writer took n QoS 0 publishes of cl's, or
// its socket took bytes.
func (b *Broker) tookQoS0(cl *client, n int) {
	cl.flow.lastByte.Store(b.now().UnixNano())
	cl.flow.taken.Add(uint64(n))
	if cl.flow.waiting.Load() || cl.flow.shedding.Load() {
		cl.mu.Lock()
		b.tookLocked(cl, 0, false)
		cl.mu.Unlock()
	}
}

// wakeRoomLocked wakes whoever waits for room in cl: it has some, or it
// went away. The caller holds cl.mu.
func (cl *client) wakeRoomLocked() {
	if room := cl.flow.roomLocked(); room != nil {
		close(room)
		cl.flow.wait.room = nil
		cl.flow.waiting.Store(false)
	}
}

// holdSet collects, while a publish is routed, the sessions it found
// blocking.
type holdSet struct {
	self *client
	on   []*client
	// scratch is what the reader routes its publishes with while it is
	// busy; nil when idle (see handler.takeScratch).
	scratch *pubScratch
	// rx is set for a message from another node (remote.go).
	rx *remoteRoute
}

// holds reports whether the publisher would wait for cl if it were full:
// not its own session, not one whose reader is stalled (see stall) or
// whose connection the slow-consumer policy cut. The caller holds cl.mu.
func (hs *holdSet) holds(cl *client) bool {
	return hs != nil && (hs.rx == nil || !hs.rx.noHold) && cl != hs.self && !cl.flow.stalled.Load() && (cl.conn == nil || cl.flow.cutLocked() != cl.conn)
}

// add notes cl if the queue a delivery at qos went to is full: the
// session's for QoS 1/2, the connection's for QoS 0 (a QoS 0 message does
// not wait behind a full QoS 1 window). The caller holds cl.mu.
//
// cl's wait starts now, not when the hold's goroutine comes to it: the
// hold waits for its sessions one after another, and a publisher held by
// several stuck subscribers must meet the slow-consumer timeout once, not
// once per subscriber.
func (hs *holdSet) add(b *Broker, cl *client, qos byte) {
	if !hs.holds(cl) || !cl.blocksLocked() {
		return
	}
	if qos == 0 && !cl.conn.Full() {
		return
	}
	if w := cl.flow.waitLocked(); w.room == nil {
		w.room = make(chan struct{})
		w.since = b.now()
		cl.flow.waiting.Store(true)
	}
	hs.on = append(hs.on, cl)
}

// hold is a connection's publishes waiting for room in the sessions they
// went to.
type hold struct {
	mu   sync.Mutex
	on   []*client // sessions still waited for
	acks []heldAck // acknowledgements to send once released, in order
	kick chan struct{}
	done chan struct{} // closed when released
	from time.Time
}

type heldAck struct {
	gate conn.Gate
	ack  *packet.Ack
}

// holdFor starts (or extends) the connection's hold for the sessions
// routing found blocking, and returns it; nil when there are none. ack,
// when not nil, is sent once the hold is released.
func (h *handler) holdFor(hs *holdSet, gate conn.Gate, ack *packet.Ack) bool {
	h.heldMu.Lock()
	defer h.heldMu.Unlock()
	hd := h.hold
	if hd == nil && len(hs.on) == 0 {
		return false
	}
	if hd == nil {
		hd = &hold{kick: make(chan struct{}, 1), done: make(chan struct{}), from: h.b.now()}
		h.hold = hd
		h.b.Flow.Holds.Add(1)
		go h.awaitRoom(hd)
	}
	hd.mu.Lock()
	for _, cl := range hs.on {
		if !slices.Contains(hd.on, cl) {
			hd.on = append(hd.on, cl)
		}
	}
	if ack != nil {
		hd.acks = append(hd.acks, heldAck{gate, ack})
	}
	hd.mu.Unlock()
	kick(hd.kick)
	return true
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// awaitRoom waits until every session of the hold has room (or met the
// slow-consumer policy), then sends the held acknowledgements and releases
// the connection's reader.
func (h *handler) awaitRoom(hd *hold) {
	for {
		hd.mu.Lock()
		var cl *client
		if len(hd.on) > 0 {
			cl = hd.on[0]
		}
		hd.mu.Unlock()
		if cl == nil {
			if h.releaseHold(hd, true) {
				return
			}
			continue // more came in meanwhile
		}
		switch h.b.waitRoom(cl, hd.kick, h.c.Done()) {
		case roomGone:
			h.releaseHold(hd, false)
			return
		case roomKicked:
			continue // the list changed
		}
		hd.mu.Lock()
		if i := slices.Index(hd.on, cl); i >= 0 {
			hd.on = slices.Delete(hd.on, i, i+1)
		}
		hd.mu.Unlock()
	}
}

// releaseHold ends a hold: its acknowledgements go out (unless the
// publisher's connection is gone) and the reader may read on. It reports
// false, releasing nothing, if sessions were added to wait for.
func (h *handler) releaseHold(hd *hold, send bool) bool {
	h.heldMu.Lock()
	defer h.heldMu.Unlock()
	hd.mu.Lock()
	// Under heldMu: no publish is adding to this hold now.
	if send && len(hd.on) > 0 {
		hd.mu.Unlock()
		return false
	}
	acks := hd.acks
	hd.acks = nil
	hd.mu.Unlock()
	if send {
		for _, a := range acks {
			if a.gate != nil {
				h.c.SendGated(a.gate, a.ack)
			} else {
				h.c.Send(a.ack)
			}
		}
	}
	h.b.Flow.HeldNanos.Add(int64(h.b.now().Sub(hd.from)))
	h.hold = nil
	close(hd.done)
	return true
}

// ackAfter sends a publish's acknowledgement behind gate, or keeps it in
// the connection's hold while there is one.
func (h *handler) ackAfter(hs *holdSet, gate conn.Gate, ack *packet.Ack) {
	if h.holdFor(hs, gate, ack) {
		return
	}
	if gate != nil {
		h.c.SendGated(gate, ack)
		return
	}
	h.c.Send(ack)
}

type roomResult int

const (
	roomFree   roomResult = iota // has room, or no longer blocks
	roomKicked                   // the hold changed: look again
	roomGone                     // the publisher's connection is gone
)

// waitRoom waits until cl no longer blocks, applying the slow-consumer
// policy when it takes nothing for the timeout (or, with a minimum rate,
// takes too little over a timeout).
func (b *Broker) waitRoom(cl *client, kicked <-chan struct{}, gone <-chan struct{}) roomResult {
	start := b.now()
	defer func() { cl.flow.heldNanos.Add(int64(b.now().Sub(start))) }()
	for {
		cl.mu.Lock()
		// waiting first, then the check: a writer that frees room after
		// the check sees waiting and wakes the room made below (tookQoS0).
		cl.flow.waiting.Store(true)
		if !cl.blocksLocked() {
			if cl.flow.roomLocked() == nil {
				cl.flow.waiting.Store(false)
			}
			cl.mu.Unlock()
			return roomFree
		}
		now := b.now()
		w := cl.flow.waitLocked()
		if w.room == nil {
			w.room = make(chan struct{})
			w.since = now
		}
		if b.flow.minRate > 0 && (w.rateFrom.IsZero() || now.Sub(w.lastBlocked) > b.flow.timeout) {
			w.rateFrom, w.rateTaken = now, cl.flow.taken.Load()
		}
		w.lastBlocked = now
		room := w.room
		// Idle since its last progress, or since it began to block if
		// that was later (an idle subscriber that a burst fills is not
		// stuck).
		from := cl.lastProgressLocked()
		if w.since.After(from) {
			from = w.since
		}
		deadline := from.Add(b.flow.timeout)
		if end := w.rateFrom.Add(b.flow.timeout); b.flow.minRate > 0 && end.Before(deadline) {
			deadline = end
		}
		cl.mu.Unlock()
		if d := deadline.Sub(b.now()); d > 0 {
			// On the broker's clock, so that tests drive the timeout.
			due := make(chan struct{})
			t := b.clock.AfterFunc(d, func() { close(due) })
			select {
			case <-room:
				t.Stop()
				continue
			case <-kicked:
				t.Stop()
				return roomKicked
			case <-gone:
				t.Stop()
				return roomGone
			case <-due:
			}
		}
		b.slowConsumer(cl, b.belowRate(cl))
	}
}

// belowRate reports whether cl took fewer messages than min_rate over a
// whole min_rate window that has just ended, and starts the next window.
func (b *Broker) belowRate(cl *client) bool {
	if b.flow.minRate <= 0 {
		return false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	now := b.now()
	w := cl.flow.waitLocked()
	if now.Before(w.rateFrom.Add(b.flow.timeout)) {
		return false
	}
	taken := cl.flow.taken.Load()
	slow := float64(taken-w.rateTaken) < b.flow.minRate*now.Sub(w.rateFrom).Seconds()
	w.rateFrom, w.rateTaken = now, taken
	return slow
}

// slowConsumer applies the slow-consumer policy to cl if it still blocks
// and has taken nothing for the timeout (or, slow, took less than the
// minimum rate).
func (b *Broker) slowConsumer(cl *client, slow bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if !cl.blocksLocked() {
		return
	}
	last := cl.lastProgressLocked()
	w := cl.flow.waitLocked()
	if w.since.After(last) {
		last = w.since
	}
	idle := b.now().Sub(last)
	if idle < b.flow.timeout && !slow {
		return // it took something meanwhile
	}
	cl.flow.actions.Add(1)
	attrs := []slog.Attr{slog.String("client_id", cl.id), slog.Duration("idle", idle.Round(time.Millisecond)),
		slog.Int("queued", cl.sess.Queued()), slog.Int("inflight", cl.sess.Inflight())}
	if b.flow.shed == session.Hold {
		b.Flow.SlowDisconnect.Add(1)
		c := cl.conn
		w.cut = c
		cl.closeConn(packet.QuotaExceeded, "slow consumer")
		// A client that reads nothing cannot take the DISCONNECT either:
		// it is cut off instead of holding its queue until the write
		// timeout. Twice LingerTime: a client that does read has the
		// DISCONNECT written and its whole gentle close by then.
		time.AfterFunc(2*conn.LingerTime, c.Close)
		b.flowLog("slow consumer disconnected", attrs...)
		b.emit(Event{Kind: EventSlowConsumer, ClientID: cl.id, Reason: fmt.Sprintf("disconnected: took nothing for %s, %d queued, %d inflight", idle.Round(time.Millisecond), cl.sess.Queued(), cl.sess.Inflight())})
	} else {
		b.Flow.SlowShed.Add(1)
		cl.flow.shedding.Store(true)
		cl.sess.Overflow = b.flow.shed
		shed := conn.ShedNewest
		if b.flow.shed == session.DropOldest {
			shed = conn.ShedOldest
		}
		cl.conn.SetShed(shed)
		b.flowLog("slow consumer: dropping messages past its queue bound", append(attrs, slog.String("policy", policyName(b.flow.shed)))...)
		b.emit(Event{Kind: EventSlowConsumer, ClientID: cl.id, Reason: fmt.Sprintf("%s: took nothing for %s, %d queued, %d inflight", policyName(b.flow.shed), idle.Round(time.Millisecond), cl.sess.Queued(), cl.sess.Inflight())})
	}
	cl.wakeRoomLocked()
}

func policyName(o session.Overflow) string {
	switch o {
	case session.DropNewest:
		return "drop_newest"
	case session.DropOldest:
		return "drop_oldest"
	}
	return "disconnect"
}

// flowLog writes a slow-consumer line within the rate the audit lines
// share, so a crowd of slow clients cannot flood the log.
func (b *Broker) flowLog(msg string, attrs ...slog.Attr) {
	if b.audit.Enabled(slog.LevelWarn) && b.audit.OK() {
		b.audit.Log(slog.LevelWarn, msg, attrs...)
	}
}

// stall stops the reader before a PUBLISH while its connection's hold is
// on, when the hold says so (QoS 0, or too many acknowledgements held),
// until the hold is released or the connection ends.
func (h *handler) stall(p *packet.Publish) {
	h.heldMu.Lock()
	hd := h.hold
	h.heldMu.Unlock()
	if hd == nil {
		return
	}
	hd.mu.Lock()
	n := len(hd.acks)
	hd.mu.Unlock()
	if p.QoS > 0 && n < maxHeldAcks {
		return
	}
	b := h.b
	b.holdMu.Lock()
	h.cl.flow.stalled.Store(true)
	hd.mu.Lock()
	before := len(hd.on)
	hd.on = slices.DeleteFunc(hd.on, func(cl *client) bool { return cl.flow.stalled.Load() })
	changed := len(hd.on) != before
	hd.mu.Unlock()
	b.holdMu.Unlock()
	if changed {
		kick(hd.kick)
	}
	b.Flow.Stalls.Add(1)
	select {
	case <-hd.done:
	case <-h.c.Done():
	}
	h.cl.flow.stalled.Store(false)
}

// overloaded holds a publisher while the queued bytes of connected
// sessions and connections are past limits.max_total_queued_bytes, for at
// most slow_consumer.timeout (a queue that does not drain meets the
// slow-consumer policy meanwhile). Each publish waits, so the busiest
// publishers are slowed the most. The reader counts as stalled while it
// waits: it reads nothing, its own acknowledgements included.
func (h *handler) overloaded() {
	b := h.b
	if b.flow.maxTotal <= 0 || b.QueuedBytes() <= b.flow.maxTotal {
		return
	}
	b.Flow.GlobalWaits.Add(1)
	b.holdMu.Lock()
	h.cl.flow.stalled.Store(true)
	b.holdMu.Unlock()
	defer h.cl.flow.stalled.Store(false)
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	end := time.NewTimer(b.flow.timeout)
	defer end.Stop()
	for b.QueuedBytes() > b.flow.maxTotal {
		select {
		case <-t.C:
		case <-end.C:
			return
		case <-h.c.Done():
			return
		}
	}
}

// ConflatedQoS0 is the QoS 0 messages replaced in connection queues by a
// newer one of their topic.
func (b *Broker) ConflatedQoS0() uint64 { return b.bytes.Conflated.Load() }

// QueuedBytes is the topic and payload bytes waiting in every session's
// queue and every connection's QoS 0 queue.
func (b *Broker) QueuedBytes() int64 { return b.queued.Load() + b.bytes.Queued.Load() }

// latestFor reports whether a subscription gets latest-value delivery:
// asked for with the user property latest-value (v5: "true", or an
// interval such as "1s" for sampled delivery, which also sets sample), or
// given by a latest_value rule for its filter and listener.
func (b *Broker) latestFor(filter, listener string, props *packet.Properties) (latest bool, sample time.Duration) {
	for _, u := range props.UserProperties {
		if u.Key != LatestValueProperty {
			continue
		}
		switch u.Value {
		case "true":
			return true, 0
		case "false":
			return false, 0
		}
		if d, err := time.ParseDuration(u.Value); err == nil && d > 0 {
			return true, min(max(d, minSample), maxSample)
		}
	}
	for _, r := range b.flow.latest {
		if (r.Listener == "" || r.Listener == listener) && topic.Covers(r.Filter, filter) {
			return true, 0
		}
	}
	return false, 0
}

// LatestValueProperty is the SUBSCRIBE user property with which an MQTT 5
// client asks for latest-value delivery ("true"), sampled delivery (an
// interval such as "500ms" or "1s") or neither ("false").
const LatestValueProperty = "latest-value"

// Bounds of a sampling interval, and of the topics a sampled subscriber
// may have waiting at once (more are delivered at once, unsampled).
const (
	minSample     = 10 * time.Millisecond
	maxSample     = time.Minute
	maxSampleKeys = 10000
)

// sampleLocked keeps a sampled QoS 0 delivery for cl's next flush,
// replacing the one of its topic waiting there. It reports false when the
// delivery should go now: the interval since the last flush has passed.
// The caller holds cl.mu.
func (b *Broker) sampleLocked(cl *client, d session.Delivery, now time.Time) bool {
	if cl.sampled == nil {
		cl.sampled = new(samples)
	}
	sm := cl.sampled
	if sm.timer == nil && now.Sub(sm.last) >= d.Sample {
		sm.last = now
		return false
	}
	if sm.waiting == nil {
		sm.waiting = make(map[string]session.Delivery)
	}
	if _, ok := sm.waiting[d.Msg.Topic]; ok {
		b.Flow.Conflated.Add(1)
		cl.flow.sampled.Add(1)
	} else if len(sm.waiting) >= maxSampleKeys {
		return false
	}
	d.Msg.Pin() // kept past this publish without a reference
	sm.waiting[d.Msg.Topic] = d
	if sm.timer == nil {
		wait := max(0, d.Sample-now.Sub(sm.last))
		sm.timer = time.AfterFunc(wait, b.guard(func() { b.flushSamples(cl) }))
	}
	return true
}

// samples is what a sampled subscriber has waiting for its next flush.
type samples struct {
	waiting map[string]session.Delivery // newest per topic
	timer   *time.Timer
	last    time.Time // last flush or immediate delivery
}

// flushSamples delivers the newest waiting message of each topic.
func (b *Broker) flushSamples(cl *client) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	sm := cl.sampled // made by sampleLocked, which set the timer that calls this
	sm.timer = nil
	sm.last = b.now()
	if cl.ended || cl.conn == nil {
		clear(sm.waiting) // QoS 0 is not kept for an offline client
		return
	}
	now := b.now()
	for t, d := range sm.waiting {
		delete(sm.waiting, t)
		before := cl.sess.Stats
		if p := cl.sess.Deliver(nil, d, now); p != nil { // QoS 0: nothing to record
			b.sent(cl, p)
			cl.conn.Send(p)
		}
		b.countDrops(before, cl.sess.Stats)
	}
}

// ClientFlow is one client's flow-control figures.
type ClientFlow struct {
	HeldFor       time.Duration // time publishers spent waiting for it
	PolicyActions uint64        // slow-consumer policy actions against it
	Dropped       uint64        // messages dropped by a drop policy or past the hard limit
	Conflated     uint64        // messages replaced by a newer one of their topic
	Shedding      bool          // a drop policy is in force now
}

// flowLocked reads cl's flow-control figures. The caller holds cl.mu.
func (cl *client) flowLocked() ClientFlow {
	st := cl.sess.Stats
	f := ClientFlow{
		HeldFor:       time.Duration(cl.flow.heldNanos.Load()),
		PolicyActions: cl.flow.actions.Load(),
		Dropped:       st.DroppedPolicy + st.DroppedOverflow,
		Conflated:     st.Conflated + cl.flow.sampled.Load(),
		Shedding:      cl.flow.shedding.Load(),
	}
	if c := cl.conn; c != nil {
		f.Dropped += c.Dropped.Load()
		f.Conflated += c.Conflated.Load()
	}
	return f
}

// FlowOverview is the broker-wide flow-control state, for the dashboard.
type FlowOverview struct {
	QueuedBytes      int64  // in session and connection queues now
	MaxQueuedBytes   int64  // limits.max_total_queued_bytes; 0: no bound
	Holds            uint64 // publishers held back, since start
	SlowConsumers    uint64 // slow-consumer policy actions, since start
	GlobalWaits      uint64 // publishes held for the broker-wide bound
	HeldSecondsTotal float64
}

// FlowOverview reads the broker-wide flow-control state.
func (b *Broker) FlowOverview() FlowOverview {
	return FlowOverview{QueuedBytes: b.QueuedBytes(), MaxQueuedBytes: b.flow.maxTotal, Holds: b.Flow.Holds.Load(),
		SlowConsumers: b.Flow.SlowDisconnect.Load() + b.Flow.SlowShed.Load(), GlobalWaits: b.Flow.GlobalWaits.Load(),
		HeldSecondsTotal: float64(b.Flow.HeldNanos.Load()) / 1e9}
}
