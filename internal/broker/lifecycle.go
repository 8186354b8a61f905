package broker

import (
	"runtime/debug"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
)

// attach binds a connection to the session of id, taking over a connection
// that still holds it, and queues CONNACK and the resumed session's packets
// before any new delivery can reach the connection.
func (b *Broker) attach(h *handler, id string, cp *packet.Connect, expiry uint32, link session.Link, connack func(present bool) *packet.Connack) (packet.ReasonCode, string) {
	t := b.begin(true)
	wills, shared, from, code, reason := b.attachLocked(h, id, cp, expiry, link, connack, t)
	// The wills this connect ends go into the operation that removes them
	// from the store (the old session's end or its record without them):
	// a crash cannot come between the two and lose them.
	for _, w := range wills {
		b.publishWillIn(w, t)
	}
	// CONNACK, the resumed packets and the wills' deliveries wait for this
	// commit in the writer; if it fails they are dropped, the wills'
	// deliveries taken back (the store still has them pending) and the
	// client is let go.
	if err := t.commit(true); err != nil {
		t.rollback()
		h.c.Close()
	}
	if len(shared) > 0 {
		b.redeliverShared(from, shared)
	}
	return code, reason
}

// attachRefused is why attach would refuse a connection of client ID id
// now, or Success: asked before a step attach must not be refused after
// (a cluster's stay marker).
func (b *Broker) attachRefused(id string) (packet.ReasonCode, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attachRefusedLocked(b.clients[id])
}

// attachRefusedLocked is attachRefused for the client record cl (nil if
// none), under b.mu.
func (b *Broker) attachRefusedLocked(cl *client) (packet.ReasonCode, string) {
	if b.closing {
		return packet.ServerUnavailable, "server shutting down"
	}
	online := b.Stats.Connections.Load()
	if cl != nil && cl.isOnline() {
		online-- // a takeover does not add a connection
	}
	if m := b.lim.MaxConnections; m > 0 && online >= int64(m) {
		b.exceeded(limMaxConnections)
		return packet.QuotaExceeded, "too many connections"
	}
	return packet.Success, ""
}

// attachLocked is attach's part under the locks; the deferred unlocks keep
// a panic in here from leaving the broker locked.
func (b *Broker) attachLocked(h *handler, id string, cp *packet.Connect, expiry uint32, link session.Link, connack func(present bool) *packet.Connack, t *tx) (wills []*willState, shared []session.Delivery, from *client, code packet.ReasonCode, reason string) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	cl := b.clients[id]
	if code, reason := b.attachRefusedLocked(cl); code != packet.Success {
		return nil, nil, nil, code, reason
	}
	if cl != nil {
		ended := func() bool {
			cl.mu.Lock()
			defer cl.mu.Unlock()
			if old := cl.conn; old != nil {
				// [MQTT-3.1.4-3] the existing connection is told and closed.
				cl.closeConn(packet.SessionTakenOver, "session taken over")
				cl.conn = nil
				cl.sess.Detach()
				cl.wakeRoomLocked()
				b.Stats.connected(cl.version, -1)
				b.connLog(connTakenOver, "session taken over", "client_id", id, "remote", h.remoteAddr())
			}
			b.goOnline(cl)
			if w := cl.will; w != nil {
				// A new connection before the will delay ends cancels the
				// will, unless the session ends now [MQTT-3.1.3-9].
				if w.delay == 0 || cp.CleanStart {
					wills = append(wills, w)
				}
				cl.cancelWill()
			}
			if cp.CleanStart {
				// [MQTT-3.1.2-4] clean start discards the old session.
				shared, from = b.endSession(cl, t), cl
				return true
			}
			return false
		}()
		if ended {
			cl = nil
		}
	}
	present := cl != nil
	if cl == nil {
		cl = &client{id: id, sess: session.New(id, b.sessionLimitsFor(id))}
		b.clients[id] = cl
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.conn = h.c
	cl.version = h.version
	cl.link = h.linkInfo()
	cl.link.receiveMax = link.ReceiveMax
	cl.will = newWill(cp, id, now)
	b.nameWill(cl.will)
	cl.info.Store(h.info)
	cl.sess.ExpiryInterval = expiry
	if b.store != nil && expiry > 0 && !cl.persistent() {
		cl.durable = true
	}
	if cl.persistent() {
		t.bt().PutSession(cl.sessionRecord(time.Time{}))
	}
	h.cl = cl
	h.attached.Store(cl)
	// A new connection has taken nothing yet, and is not stuck.
	cl.flow.lastTake.Store(now.UnixNano())
	cl.flow.lastByte.Store(now.UnixNano())
	b.Stats.connected(h.version, 1)
	b.Stats.ConnectionsTotal.Add(1)
	b.clientChanged()
	t.send(h.c, connack(present))
	before := cl.sess.Stats
	var pkts []packet.Packet
	pkts = cl.sess.Attach(cl.jr(t), link, now)
	b.countDrops(before, cl.sess.Stats)
	b.recordSession(cl)
	if len(pkts) > 0 {
		b.sent(cl, pkts...) // before sending: the writer recycles what it wrote
		t.send(h.c, pkts...)
	}
	return wills, shared, from, packet.Success, ""
}

// endSession removes a session, its subscriptions and its map entry, in
// the operation t (which deletes the stored session). The caller holds
// b.mu and cl.mu. It returns the $share deliveries to hand on.
func (b *Broker) endSession(cl *client, t *tx) []session.Delivery {
	cl.ended = true
	cl.wakeRoomLocked()
	b.stopLife(cl)
	if b.clients[cl.id] == cl {
		delete(b.clients, cl.id)
	}
	b.subs.RemoveClient(cl.id)
	if b.backplane != nil {
		b.backplane.SessionEnded(cl.id)
	}
	shared := cl.sess.TakeShared(cl.jr(t))
	if cl.persistent() {
		// The caller's operation deletes the stored session.
		bt := t.bt()
		cl.sess.Pending(func(d *session.Delivery) { b.unref(bt, d.Msg) })
		bt.DeleteSession(cl.id)
		cl.durable = false
	}
	cl.sess.Discard()
	return shared
}

// detach handles the end of a connection: session expiry, the will, and
// $share messages it left unacknowledged.
func (b *Broker) detach(h *handler) {
	t := b.begin(true)
	will, shared := b.detachLocked(h, t)
	if will != nil {
		// In the operation that removes it from the store.
		b.publishWillIn(will, t)
	}
	// Synced: the record that the connection ended (and whether its will
	// was discarded by a normal DISCONNECT, and when the will delay and
	// expiry started) must survive a crash right after, or a restart would
	// take the session for connected at shutdown and publish a discarded
	// will, or count the delay from the restart. Only persistent sessions
	// write anything; concurrent commits share the sync.
	if err := t.commit(true); err != nil {
		t.rollback() // the will stays pending in the store
	}
	if b.backplane != nil {
		// The will may be gone or pending now: keep the record current.
		h.cl.mu.Lock()
		b.recordSession(h.cl)
		h.cl.mu.Unlock()
	}
	if len(shared) > 0 {
		b.redeliverShared(h.cl, shared)
	}
}

func (b *Broker) detachLocked(h *handler, t *tx) (will *willState, shared []session.Delivery) {
	cl := h.cl
	b.mu.Lock()
	defer b.mu.Unlock()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != h.c {
		return nil, nil // taken over: the new connection dealt with the will
	}
	cl.conn = nil
	cl.sess.Detach()
	cl.wakeRoomLocked() // offline, it no longer holds anyone back
	b.Stats.connected(h.version, -1)
	b.clientChanged()
	if h.discardWill {
		cl.will = nil // [MQTT-3.1.2-10]
	}
	closing := b.closing
	shared = cl.sess.TakeShared(cl.jr(t))
	expiry := cl.sess.ExpiryInterval
	if expiry == 0 {
		// The session ends with the connection, and so the will waits no
		// longer [MQTT-3.1.3-9]; not on shutdown, which is not the client's
		// failure.
		will, cl.will = cl.will, nil
		if closing {
			will = nil
		}
		shared = append(shared, b.endSession(cl, t)...)
		return will, shared
	}
	why := whyDisconnect
	if closing {
		// On shutdown the will stays pending in the store: the next start
		// publishes it if the client has not come back within its delay.
		why = whyShutdown
	}
	will = b.goOffline(cl, why, b.now())
	if cl.persistent() {
		t.bt().PutSession(cl.sessionRecord(cl.lifeSince()))
	}
	return will, shared
}

// guard wraps a timer callback so that a bug in it is logged, not fatal.
func (b *Broker) guard(fn func()) func() {
	return func() {
		defer func() {
			if r := recover(); r != nil {
				b.log.Error("timer callback panic", "panic", r, "stack", string(debug.Stack()))
			}
		}()
		fn()
	}
}

// publishWill publishes w in an operation of its own.
func (b *Broker) publishWill(w *willState) {
	t := b.begin(true)
	b.publishWillIn(w, t)
	t.commit(w.msg.QoS > 0)
}

// publishWillIn publishes w in the operation t, which the caller commits
// (synced: a will removed from the store and not yet published would be
// lost by a crash): the operation that ends the session or drops the will
// from its record, so the will's deliveries and its removal land in the
// store together. t, if not nil, must be gated (begin(true)): no delivery
// goes out before the commit. The caller holds no lock.
func (b *Broker) publishWillIn(w *willState, t *tx) {
	wm := w.msg
	// Under the name it was given when set (WillNamer), whichever node
	// publishes it.
	m := &session.Message{Topic: wm.Topic, Payload: wm.Payload, QoS: wm.QoS, Retain: wm.Retain, Props: wm.Props, Publisher: wm.Publisher,
		Origin: wm.Origin}
	if e := m.Props.MessageExpiry; e != nil {
		// Will expiry counts from publication.
		m.Expiry = b.now().Add(time.Duration(*e) * time.Second)
		m.Props.MessageExpiry = nil
	}
	b.log.Debug("publishing will", "client_id", m.Publisher, "topic", m.Topic)
	b.publish(m, t)
}
