package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"time"
	"unicode/utf8"

	"github.com/starling-mqtt/starling/internal/conn"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/topic"
)

// serve reads packets until the connection ends and returns why it ended,
// or until it is parked waiting for input (the broker's idle poll): resume
// then calls serve again on another goroutine.
func (h *handler) serve() (reason string, parked bool) {
	for {
		var deadline time.Time
		if h.resuming {
			// The packet awaited when parked is due as it was.
			deadline, h.resuming = h.deadlineAt(), false
		} else if h.c.PacketReady() {
			// The next packet is here whole: no wait, so no deadline and
			// no park (ReadPacket sets none for it).
			h.served = true
		} else {
			// About to wait: an idle connection holds no scratch.
			h.releaseScratch(true)
			if h.keepAlive > 0 {
				ka := time.Duration(h.keepAlive) * time.Second
				// [MQTT-3.1.2-22] one and a half times the keep alive.
				deadline = time.Now().Add(ka * 3 / 2) // a socket deadline: real time
			}
			if h.b.idlePoll {
				// Right after CONNECT park at once (many clients then
				// idle); after other packets only once idle a while.
				grace := conn.ParkAfter
				if !h.served {
					grace, h.served = 0, true
				}
				// Set first: once parked, resume may run at once.
				h.resuming = true
				h.setDeadline(deadline)
				if h.c.Park(deadline, grace) {
					return "", true
				}
				h.resuming = false
			}
		}
		p, _, err := h.c.ReadPacket(deadline)
		if err != nil {
			h.releaseScratch(false)
			return h.readFailed(err), false
		}
		if pub, ok := p.(*packet.Publish); ok && h.cl != nil {
			// Push back: a publisher whose messages wait for room is not
			// read further (flow.go).
			h.stall(pub)
			h.overloaded()
			if pub.QoS > 0 {
				h.awaitRemote()
			}
		}
		if reason := h.handle(p); reason != "" {
			h.releaseScratch(false)
			return reason, false
		}
	}
}

// readFailed closes the connection after a read error, telling a v5 client
// why when there is a reason code for it.
func (h *handler) readFailed(err error) string {
	var ne net.Error
	var pe *packet.Error
	switch {
	case errors.As(err, &pe):
		h.disconnect(pe.Code, pe.Reason)
		return pe.Reason
	case errors.As(err, &ne) && ne.Timeout():
		h.disconnect(packet.KeepAliveTimeout, "keep alive timeout")
		return "keep alive timeout"
	case errors.Is(err, io.EOF):
		h.c.CloseAfter(nil)
		return "connection closed by client"
	case errors.Is(err, net.ErrClosed):
		// Closing already (the broker ended it, and is discarding what
		// the client still sends): let that finish.
		h.c.CloseAfter(nil)
		return "connection closed"
	}
	h.c.Close()
	return err.Error()
}

// disconnect ends the connection with a server DISCONNECT (v5) or a plain
// close (3.x, which has no server DISCONNECT).
func (h *handler) disconnect(code packet.ReasonCode, reason string) {
	if h.version != packet.V5 {
		h.c.Close()
		return
	}
	d := &packet.Disconnect{ReasonCode: code}
	if h.problemInfo {
		d.Properties.ReasonString = reason
	}
	h.c.CloseAfter(d)
}

// fail is disconnect plus the reason handed back to serve.
func (h *handler) fail(code packet.ReasonCode, reason string) string {
	h.disconnect(code, reason)
	return reason
}

// handle processes one packet; a non-empty result ends the connection.
func (h *handler) handle(p packet.Packet) string {
	if tr := h.b.tracer.Load(); tr != nil {
		tr.packet(h.cl, p)
	}
	switch p := p.(type) {
	case *packet.Publish:
		return h.onPublish(p)
	case *packet.Ack:
		return h.onAck(p)
	case *packet.Subscribe:
		return h.onSubscribe(p)
	case *packet.Unsubscribe:
		return h.onUnsubscribe(p)
	case *packet.Pingreq:
		h.c.SendPong()
		return ""
	case *packet.Disconnect:
		return h.onDisconnect(p)
	case *packet.Connect:
		return h.fail(packet.ProtocolError, "second CONNECT") // [MQTT-3.1.0-2]
	case *packet.Auth:
		return h.onAuth(p)
	}
	return h.fail(packet.ProtocolError, "unexpected packet "+packetName(p.Type()))
}

func packetName(t packet.Type) string {
	names := [...]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}
	if int(t) < len(names) {
		return names[t]
	}
	return "unknown"
}

func (h *handler) onPublish(p *packet.Publish) string {
	b := h.b
	if p.QoS > 0 && !h.waitFence() {
		return "session taken over by another node"
	}
	h.received(p)
	h.hs.self, h.hs.on = h.cl, h.hs.on[:0]
	v5 := h.version == packet.V5
	if p.QoS > b.lim.MaxQoS {
		return h.fail(packet.QoSNotSupported, "QoS above maximum QoS") // [MQTT-3.2.2-11]
	}
	name := p.Topic
	if a := p.Properties.TopicAlias; a != nil {
		if *a == 0 || *a > h.aliasMax {
			return h.fail(packet.TopicAliasInvalid, "topic alias out of range") // [MQTT-3.3.2-8, 3.3.2-9]
		}
		if name == "" {
			var ok bool
			if name, ok = h.aliases[*a]; !ok {
				return h.fail(packet.ProtocolError, "unknown topic alias")
			}
		} else {
			if h.aliases == nil {
				h.aliases = make(map[uint16]string)
			}
			h.aliases[*a] = name
		}
	}
	if name == "" && v5 {
		return h.fail(packet.ProtocolError, "empty topic without topic alias") // a Protocol Error by §3.3.2.3.4 (no numbered statement)
	}
	if err := topic.ValidateName(name); err != nil {
		return h.fail(packet.TopicNameInvalid, "topic name: "+err.Error()) // [MQTT-3.3.2-2]
	}
	if tr := b.tracer.Load(); tr != nil {
		tr.message(h.cl, "in", name, p.QoS, p.Retain, p.PacketID, p.Payload)
	}
	if v5 {
		if len(p.Properties.SubscriptionIDs) > 0 {
			return h.fail(packet.ProtocolError, "subscription identifier in PUBLISH from client") // [MQTT-3.3.4-6]
		}
		if rt := p.Properties.ResponseTopic; rt != "" && topic.ValidateName(rt) != nil {
			return h.fail(packet.ProtocolError, "response topic is not a valid topic name") // [MQTT-3.3.2-14]
		}
		if f := p.Properties.PayloadFormat; f != nil && *f == 1 && !utf8.Valid(p.Payload) {
			// [MQTT-3.3.2-4] the message is refused, not forwarded.
			if p.QoS == 0 {
				return h.fail(packet.PayloadFormatInvalid, "payload is not UTF-8")
			}
			h.ackPublish(p, packet.PayloadFormatInvalid)
			return ""
		}
	}
	if key := b.lim.TopicExceeded(name); key != "" {
		b.topicExceeded(key)
		if p.QoS > 0 {
			h.ackPublish(p, packet.TopicNameInvalid)
		}
		return ""
	}
	if pl := h.pubLimit; pl != nil {
		// Over the rate, the client is slowed down: its next packet is read
		// only once it is back within the rate, so nothing it sent is lost
		// and TCP pushes back on it. (PUBACK cannot carry 0x96, and a
		// disconnect would lose QoS 0 messages.)
		// Both buckets refill at once: the longer wait satisfies both.
		dm, db := pl.msgs.Take(1), pl.bytes.Take(len(p.Payload))
		if dm > 0 {
			b.exceeded(limPublishRate)
		}
		if db > 0 {
			b.exceeded(limPublishBytesRate)
		}
		if d := max(dm, db); d > 0 {
			time.Sleep(d)
		}
	}
	if allowed := b.allow(h.info, ActPublish, name); !allowed || isSys(name) {
		b.Traffic.DeniedPublish.Add(1)
		why := "not authorized"
		if allowed {
			why = "$SYS is read-only"
		}
		b.emit(Event{Kind: EventPublishDenied, ClientID: h.cl.id, Username: h.info.Username, Remote: h.remoteAddr(), Listener: h.listener, Topic: name, Reason: why})
		if allowed {
			b.auditLog(slog.LevelInfo, "publish denied", slog.String("client_id", h.cl.id), slog.String("username", h.info.Username),
				slog.String("remote", h.remoteAddr()), slog.String("topic", name), slog.String("reason", "$SYS is read-only"))
		} else {
			// The Authorizer's audit line says it.
			b.log.Debug("publish denied", "client_id", h.cl.id, "username", h.info.Username, "remote", h.remoteAddr(), "topic", name)
		}
		if p.QoS > 0 {
			// v5 says why; 3.x must acknowledge as usual and drop it
			// [MQTT-3.3.5-2].
			h.ackPublish(p, packet.NotAuthorized)
		}
		return ""
	}
	var m *session.Message
	if p.QoS == 0 && !p.Retain && b.backplane == nil {
		// Held only by the deliveries in connections' queues: pooled, with
		// the buffer its payload was read into; dropped below.
		m = session.NewPooled()
		m.Topic, m.Payload, m.Publisher = name, p.Payload, h.cl.id
		m.Own(h.c.TakeBody())
		defer m.Unref()
	} else {
		m = &session.Message{Topic: name, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Publisher: h.cl.id}
	}
	if v5 {
		m.Props = messageProps(&p.Properties)
		if e := p.Properties.MessageExpiry; e != nil {
			m.Expiry = b.now().Add(time.Duration(*e) * time.Second)
		}
	}
	// Deliveries to persistent sessions wait in their writers for this
	// operation's commit; the acknowledgement waits for it here.
	var t *tx
	if p.QoS == 0 {
		t = b.beginQoS0(h.takeScratch())
	} else {
		t = b.begin(true)
	}
	switch p.QoS {
	case 0:
		b.publishFrom(m, t, &h.hs)
		t.commit(false)
		endQoS0(t)
		h.holdFor(&h.hs, nil, nil)
	case 1:
		n := b.publishFrom(m, t, &h.hs)
		if err := t.commit(true); err != nil {
			t.rollback()
			return h.storeFailed(p)
		}
		h.ackPublishAfter(t.ackGate(), p, noMatch(n))
		h.noteRemote(t)
	case 2:
		h.cl.mu.Lock()
		first, err := h.cl.sess.ReceiveQoS2(h.cl.jr(t), p.PacketID, p.Dup)
		var replay session.Origin
		again := false
		if err == nil && !first {
			replay, again = h.cl.sess.TakeReplay(p.PacketID)
		}
		h.cl.mu.Unlock()
		if err != nil {
			t.commit(false)
			return h.fail(packet.ReceiveMaximumExceeded, "too many QoS 2 messages awaiting PUBREL") // [MQTT-3.3.4-9]
		}
		code := packet.Success
		if first && t != nil {
			t.later = true
			if b.backplane != nil {
				t.hold = &publishHold{done: make(chan struct{})}
				m.Hold = t.hold
				// Never left held (a panic recovered with the
				// connection): other connections' writers wait on it.
				defer t.hold.release(true)
			}
		}
		switch {
		case first:
			code = noMatch(b.publishFrom(m, t, &h.hs))
			if !m.Origin.IsZero() {
				// Kept with the packet ID: the node that continues the
				// session knows what it received (TakeReplay).
				h.cl.mu.Lock()
				h.cl.sess.NameInbound(p.PacketID, m.Origin)
				h.cl.mu.Unlock()
				t.nameInbound(h.cl.id, p.PacketID, m.Origin)
			}
		case again:
			// Received first by a node since lost, which may not have
			// routed it everywhere: again, under the same name, so that
			// only the sessions that missed it take it.
			m.Origin = replay
			code = noMatch(b.publishFrom(m, t, &h.hs))
		}
		err = t.commit(true)
		// Released once committed, its packet ID replicated (or the
		// bounded wait for it over): what other operations deliver of
		// it goes out from then on (tx.holding), or never if the
		// operation failed.
		if t != nil {
			t.hold.release(err != nil)
		}
		if err != nil {
			t.sendForward(false)
			t.rollback()
			return h.storeFailed(p)
		}
		t.sendForward(true)
		h.ackPublishAfter(t.ackGate(), p, code)
		h.noteRemote(t)
	}
	return ""
}

// beginQoS0 is begin(false) in the reader's scratch: the operation of a
// QoS 0 publish is ungated and nothing refers to it once it is committed,
// so it is reused instead of allocated; endQoS0 clears it after its
// commit.
func (b *Broker) beginQoS0(sc *pubScratch) *tx {
	if b.store == nil {
		return nil
	}
	t := &sc.t
	t.b = b
	return t
}

func endQoS0(t *tx) {
	if t != nil {
		*t = tx{}
	}
}

// storeFailed refuses a publish the store could not take: nothing is
// acknowledged that is not durable. v5 gets the reason in the
// acknowledgement; 3.x, which cannot be told, is disconnected.
func (h *handler) storeFailed(p *packet.Publish) string {
	h.hs.on = h.hs.on[:0] // rolled back: it reached no one
	if p.QoS == 2 {
		t := h.b.begin(false)
		h.cl.mu.Lock()
		h.cl.sess.Release(h.cl.jr(t), p.PacketID) // the flow ends with the error PUBREC
		h.cl.mu.Unlock()
		t.commit(false)
	}
	if h.version != packet.V5 {
		h.c.Close()
		return "store write failed"
	}
	kind := packet.PUBACK
	if p.QoS == 2 {
		kind = packet.PUBREC
	}
	h.ackAfter(&h.hs, nil, &packet.Ack{Kind: kind, PacketID: p.PacketID, ReasonCode: packet.QuotaExceeded})
	return ""
}

// isSys reports a topic of the broker's own $SYS tree, which clients may
// read but not write [MQTT-4.7.2-1 and the note after it].
func isSys(name string) bool {
	return name == "$SYS" || len(name) > 5 && name[:5] == "$SYS/"
}

func noMatch(n int) packet.ReasonCode {
	if n == 0 {
		return packet.NoMatchingSubscribers
	}
	return packet.Success
}

// ackPublish sends PUBACK or PUBREC. 3.x has no reason codes, and an error
// code there means the message is silently not forwarded.
func (h *handler) ackPublish(p *packet.Publish, code packet.ReasonCode) {
	h.ackPublishAfter(nil, p, code)
}

// ackPublishAfter acknowledges a publish once gate opens (at once for
// nil): in a cluster, once the nodes keeping it for persistent sessions
// have it. While the connection's publishes wait for room in full queues,
// it waits with them (flow.go), keeping acknowledgements in order
// [MQTT-4.6.0-2].
func (h *handler) ackPublishAfter(gate conn.Gate, p *packet.Publish, code packet.ReasonCode) {
	kind := packet.PUBACK
	if p.QoS == 2 {
		kind = packet.PUBREC
	}
	if h.version != packet.V5 {
		code = packet.Success
	}
	h.ackAfter(&h.hs, gate, &packet.Ack{Kind: kind, PacketID: p.PacketID, ReasonCode: code})
}

func (h *handler) onAck(a *packet.Ack) string {
	cl := h.cl
	now := h.b.now()
	// PUBREL and PUBCOMP answers, and newly sent PUBLISHes (their packet
	// IDs), go out only once the store has the state they reflect.
	t := h.b.begin(true)
	var next []packet.Packet
	replaced := false
	func() {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.conn != h.c {
			// A late packet of a connection whose session a new one took
			// over (read before this one was closed): what it would let
			// through would go out on this dying connection and be held
			// as inflight, and the new connection, which resent the
			// inflight messages as it attached, would never get it. The
			// client answers the resends there instead.
			replaced = true
			return
		}
		j := cl.jr(t)
		before := cl.sess.Stats
		defer func() { h.b.countDrops(before, cl.sess.Stats) }()
		took := false
		defer func() {
			if took {
				h.b.tookLocked(cl, 1, true)
			}
		}()
		switch a.Kind {
		case packet.PUBACK:
			next, took = cl.sess.Puback(j, a.PacketID, now)
		case packet.PUBREC:
			var rel packet.Packet
			rel, next, took = cl.sess.Pubrec(j, a.PacketID, a.ReasonCode, now)
			if rel != nil {
				t.send(h.c, rel)
			}
		case packet.PUBREL:
			ack := &packet.Ack{Kind: packet.PUBCOMP, PacketID: a.PacketID}
			if !cl.sess.Release(j, a.PacketID) && h.version == packet.V5 {
				ack.ReasonCode = packet.PacketIDNotFound
			}
			t.send(h.c, ack)
		case packet.PUBCOMP:
			next, took = cl.sess.Pubcomp(j, a.PacketID, now)
		}
		if len(next) > 0 {
			h.b.sent(cl, next...) // before sending: the writer recycles what it wrote
			t.send(h.c, next...)
		}
	}()
	// Synced when the answer depends on it: PUBREL (state past PUBREC),
	// PUBCOMP (inbound ID released) and QoS 2 PUBLISHes whose packet IDs
	// must survive for exactly once. A QoS 1 one may be resent under a new
	// ID after a crash, which QoS 1 allows, so it does not wait for a sync.
	if replaced {
		t.commit(false) // nothing written: opens the gate
		return "session taken over"
	}
	if err := t.commit(a.Kind == packet.PUBREC || a.Kind == packet.PUBREL || anyQoS2(next)); err != nil {
		// What this acknowledgement answered was dropped with the failed
		// commit; the client gets it again on its next connection.
		h.c.Close()
		return "store write failed"
	}
	return ""
}

func anyQoS2(ps []packet.Packet) bool {
	for _, p := range ps {
		if o, ok := p.(interface{ QoSLevel() byte }); ok && o.QoSLevel() == 2 {
			return true
		}
	}
	return false
}

func (h *handler) onSubscribe(p *packet.Subscribe) string {
	b, cl := h.b, h.cl
	v5 := h.version == packet.V5
	subID := 0
	if ids := p.Properties.SubscriptionIDs; len(ids) > 0 {
		subID = ids[0]
	}
	for _, s := range p.Subscriptions {
		if _, _, shared := topic.ParseShared(s.Filter); shared && s.NoLocal {
			return h.fail(packet.ProtocolError, "no local on a shared subscription") // [MQTT-3.8.3-4]
		}
	}
	now := b.now()
	codes := make([]packet.ReasonCode, len(p.Subscriptions))
	var retained []session.Delivery
	// Deferred in reverse: the commit runs after the unlock, and SUBACK
	// waits for it in the writer.
	t := b.begin(true)
	defer func() {
		if t.commit(true) != nil {
			h.c.Close() // the SUBACK was dropped with the failed commit
		}
	}()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != h.c {
		return "session taken over" // late packet of a replaced connection
	}
	nsubs := 0
	if b.lim.MaxSubscriptionsPerClient > 0 {
		b.subs.ClientSubscriptions(cl.id, func(string, string, subValue) bool { nsubs++; return true })
	}
	for i, s := range p.Subscriptions {
		if err := topic.ValidateFilter(s.Filter); err != nil {
			codes[i] = packet.TopicFilterInvalid
			if !v5 {
				codes[i] = packet.UnspecifiedError // 3.1.1 has only 0x80 for failure
			}
			continue
		}
		if key := b.lim.TopicExceeded(s.Filter); key != "" {
			b.topicExceeded(key)
			codes[i] = packet.TopicFilterInvalid
			if !v5 {
				codes[i] = packet.UnspecifiedError
			}
			continue
		}
		if !b.allow(h.info, ActSubscribe, s.Filter) {
			codes[i] = packet.NotAuthorized
			if !v5 {
				codes[i] = packet.UnspecifiedError
			}
			b.Traffic.DeniedSubscribe.Add(1)
			b.emit(Event{Kind: EventSubscribeDenied, ClientID: cl.id, Username: h.info.Username, Remote: h.remoteAddr(), Listener: h.listener, Topic: s.Filter, Reason: "not authorized"})
			b.log.Debug("subscribe denied", "client_id", cl.id, "username", h.info.Username, "remote", h.remoteAddr(), "filter", s.Filter)
			continue
		}
		group, inner, shared := topic.ParseShared(s.Filter)
		if !shared {
			inner = s.Filter
		}
		s.QoS = min(s.QoS, b.lim.MaxQoS) // [MQTT-3.8.4-7] granted may be lower
		latest, sample := b.latestFor(inner, h.listener, &p.Properties)
		existed := b.subs.Add(cl.id, group, inner, subValue{cl: cl, opts: s, id: subID, latest: latest, sample: sample})
		if !existed {
			if max := b.lim.MaxSubscriptionsPerClient; max > 0 && nsubs >= max {
				b.subs.Remove(cl.id, group, inner)
				b.exceeded(limSubscriptions)
				codes[i] = packet.QuotaExceeded // limits.max_subscriptions_per_client
				if !v5 {
					codes[i] = packet.UnspecifiedError
				}
				continue
			}
			nsubs++
		}
		if cl.persistent() {
			t.bt().PutSubscription(cl.id, &store.Subscription{Filter: s.Filter, Options: s, ID: subID})
		}
		codes[i] = packet.ReasonCode(s.QoS)
		// Retained messages go to new subscribers per Retain Handling, and
		// never through a shared subscription [MQTT-3.3.1-9, 3.3.1-10, 3.3.1-11]
		// (shared: §4.8.2).
		if shared || s.RetainHandling == 2 || (s.RetainHandling == 1 && existed) {
			continue
		}
		for _, m := range b.retained.match(inner, now) {
			if !b.allow(h.info, ActRead, m.Topic) {
				continue
			}
			d := session.Delivery{Msg: m, QoS: min(m.QoS, s.QoS), Retain: true} // [MQTT-3.3.1-9]
			if subID != 0 {
				d.SubIDs = []int{subID}
			}
			retained = append(retained, d)
		}
	}
	// SUBACK first, then the retained messages: our order (§3.8.4 lets
	// matching PUBLISHes go before SUBACK), the one clients expect.
	t.send(h.c, &packet.Suback{PacketID: p.PacketID, ReasonCodes: codes})
	for _, d := range retained {
		if out := cl.sess.Deliver(cl.jr(t), d, now); out != nil {
			b.sent(cl, out) // before sending: the writer recycles what it wrote
			t.send(h.c, out)
		}
	}
	b.recordSession(cl)
	return ""
}

func (h *handler) onUnsubscribe(p *packet.Unsubscribe) string {
	t := h.b.begin(true)
	defer func() {
		if t.commit(true) != nil {
			h.c.Close() // the UNSUBACK was dropped with the failed commit
		}
	}()
	h.cl.mu.Lock()
	defer h.cl.mu.Unlock()
	if h.cl.conn != h.c {
		return "session taken over" // late packet of a replaced connection
	}
	codes := make([]packet.ReasonCode, len(p.Filters))
	for i, f := range p.Filters {
		if topic.ValidateFilter(f) != nil {
			codes[i] = packet.TopicFilterInvalid
			continue
		}
		group, inner, shared := topic.ParseShared(f)
		if !shared {
			inner = f
		}
		if !h.b.subs.Remove(h.cl.id, group, inner) {
			codes[i] = packet.NoSubscriptionExisted
		} else if h.cl.persistent() {
			t.bt().DeleteSubscription(h.cl.id, f)
		}
	}
	t.send(h.c, &packet.Unsuback{PacketID: p.PacketID, ReasonCodes: codes})
	h.b.recordSession(h.cl)
	return ""
}

func (h *handler) onDisconnect(p *packet.Disconnect) string {
	if e := p.Properties.SessionExpiry; e != nil {
		if h.expiryZero && *e != 0 {
			return h.fail(packet.ProtocolError, "session expiry set at DISCONNECT after 0 at CONNECT") // [MQTT-3.14.2-2]
		}
		v := *e
		if m := h.b.lim.MaxSessionExpiry; m > 0 && time.Duration(v)*time.Second > m {
			v = uint32(m / time.Second) // the same cap as at CONNECT
		}
		h.cl.mu.Lock()
		h.cl.sess.ExpiryInterval = v
		h.cl.mu.Unlock()
	}
	// Only a normal disconnection (0x00) removes the will; 0x04 and error
	// codes leave it to be published [MQTT-3.1.2-10].
	h.discardWill = p.ReasonCode == packet.Success
	if h.discardWill {
		// At once, so a reconnect racing this connection's teardown cannot
		// publish it [MQTT-3.14.4-3]; and durably, synced before the
		// connection closes, so that a crash the client may see after
		// its DISCONNECT cannot bring the will back: a persistent
		// session's record says the connection ended, without a will.
		t := h.b.begin(false)
		h.cl.mu.Lock()
		if h.cl.conn == h.c {
			h.cl.will = nil
			if h.cl.persistent() {
				t.bt().PutSession(h.cl.sessionRecord(h.b.now()))
			}
		}
		h.cl.mu.Unlock()
		if err := t.commit(true); err != nil {
			h.c.Close()
			return "store write failed"
		}
	}
	h.c.CloseAfter(nil) // acks already queued still go out
	return "client disconnected (" + packetReason(p.ReasonCode) + ")"
}

func packetReason(c packet.ReasonCode) string {
	if c == packet.Success {
		return "normal"
	}
	if c == packet.DisconnectWithWill {
		return "with will"
	}
	return "code " + string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15])
}
