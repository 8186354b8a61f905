package broker

import (
	"time"

	"github.com/starling-mqtt/starling/internal/session"
)

// A client's offline life: when its connection ended, why, and the two
// deadlines that follow (its will due, its session expiring). Every path
// that takes a session offline (a connection ending, a restore from the
// store, a session adopted from or handed over to another node, a will
// released after a restart in a cluster) sets them here, and one scheduler
// fires them on the broker's clock.

// Clock is the broker's time source: real time by default (SetClock
// injects another, as unit tests do to drive wills and expiry without
// sleeping).
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop cancels the call; it reports whether it did (false: it has
	// run or is running).
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// SetClock makes the broker take time from c: the offline life of
// clients (will delay, session expiry), message expiry and flow control's
// timing follow it; socket deadlines (CONNECT timeout, keep alive) keep
// real time. Call it before Restore and serving.
func (b *Broker) SetClock(c Clock) { b.clock = c }

func (b *Broker) now() time.Time { return b.clock.Now() }

// offlineWhy says what took a session offline.
type offlineWhy uint8

const (
	onlineNow      offlineWhy = iota // a connection is attached (or none ever was here)
	whyDisconnect                    // its connection ended
	whyShutdown                      // its connection ended with the broker's shutdown: nothing runs down
	whyRestored                      // restored from the store at start
	whyAdopted                       // handed over by another node
	whyOrphaned                      // recovered from a lost node's records
	whyHandingOver                   // another node is taking it over
)

func (w offlineWhy) String() string {
	switch w {
	case whyDisconnect:
		return "disconnected"
	case whyShutdown:
		return "shutdown"
	case whyRestored:
		return "restored"
	case whyAdopted:
		return "adopted"
	case whyOrphaned:
		return "orphaned"
	case whyHandingOver:
		return "handing over"
	}
	return "online"
}

// lifetime is a client's offline life as deadlines. Guarded by client.mu.
// A client holds one only while offline (client.offline): most clients are
// online, and the record is 104 bytes of the client's.
type lifetime struct {
	// since is when the last connection ended (persisted: the deadlines
	// count from it across restarts and moves); zero while connected, or
	// for a session whose end is unknown.
	since time.Time
	why   offlineWhy
	// willAt is when the pending will is due, zero if none is waiting on
	// the clock (none, or held for ReleaseWills); expireAt when the
	// session ends, zero if it never does (or is online). A will still
	// pending at expireAt is published then [MQTT-3.1.3-9].
	willAt, expireAt time.Time
	timer            Timer
}

// offline returns cl's offline life, made if it has none. The caller holds
// cl.mu.
func (cl *client) offline() *lifetime {
	if cl.life == nil {
		cl.life = &lifetime{}
	}
	return cl.life
}

// lifeSince is when the offline life began; zero when there is none.
// The caller holds cl.mu.
func (cl *client) lifeSince() time.Time {
	if cl.life == nil {
		return time.Time{}
	}
	return cl.life.since
}

// offlineDeadlines is the one computation of an offline client's
// deadlines, counted from since: the will (if any) after its delay, the
// session after its expiry interval, and the will no later than the
// session's end.
func offlineDeadlines(since time.Time, expiry uint32, w *willState) (willAt, expireAt time.Time) {
	if expiry != session.NeverExpire {
		expireAt = since.Add(time.Duration(expiry) * time.Second)
	}
	if w != nil {
		willAt = since.Add(w.delay)
		if !expireAt.IsZero() && expireAt.Before(willAt) {
			willAt = expireAt
		}
	}
	return willAt, expireAt
}

// goOffline starts cl's offline life, its connection having ended at since
// (zero or in the future: now). It sets both deadlines and arms the
// scheduler, and returns the will if it is due already: the caller
// publishes it once the locks are released (cl.will is cleared). A held
// will (ReleaseWills decides) gets no deadline; on shutdown nothing is
// armed and the will stays pending for the next start. The caller holds
// cl.mu.
func (b *Broker) goOffline(cl *client, why offlineWhy, since time.Time) (due *willState) {
	now := b.now()
	if since.IsZero() || since.After(now) {
		since = now
	}
	l := cl.offline()
	b.stopLife(cl)
	l.since, l.why = since, why
	l.willAt, l.expireAt = time.Time{}, time.Time{}
	if why == whyShutdown {
		return nil
	}
	w := cl.will
	if w != nil && w.held {
		w = nil
	}
	l.willAt, l.expireAt = offlineDeadlines(since, cl.sess.ExpiryInterval, w)
	if w != nil && !now.Before(l.willAt) {
		cl.will, l.willAt = nil, time.Time{}
		due = w
	}
	b.armLife(cl, now)
	return due
}

// startWill makes cl's pending will wait out its delay counted from
// since, within the session's life already set; it returns the will if
// it is due already (cl.will is cleared). The caller holds cl.mu.
func (b *Broker) startWill(cl *client, since time.Time) (due *willState) {
	now := b.now()
	w := cl.will
	if w == nil {
		return nil
	}
	l := cl.offline()
	l.willAt, _ = offlineDeadlines(since, cl.sess.ExpiryInterval, w)
	if !now.Before(l.willAt) {
		cl.will, l.willAt = nil, time.Time{}
		return w
	}
	b.stopLife(cl)
	b.armLife(cl, now)
	return nil
}

// cancelWill forgets cl's pending will (a reconnect, a hand-over); its
// deadline goes with it. The caller holds cl.mu.
func (cl *client) cancelWill() {
	cl.will = nil
	if cl.life != nil {
		cl.life.willAt = time.Time{}
	}
}

// goOnline ends cl's offline life: a connection attached. Nothing armed
// for it fires any more. The caller holds cl.mu.
func (b *Broker) goOnline(cl *client) {
	b.stopLife(cl)
	cl.life = nil
}

// stopLife disarms cl's scheduled deadline and starts a new generation,
// so that a callback already on its way does nothing.
func (b *Broker) stopLife(cl *client) {
	if l := cl.life; l != nil && l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	cl.lifeGen++
}

// armLife schedules cl's earliest deadline on the broker's clock.
func (b *Broker) armLife(cl *client, now time.Time) {
	l := cl.life
	if l == nil {
		return
	}
	next := l.expireAt
	if !l.willAt.IsZero() && (next.IsZero() || l.willAt.Before(next)) {
		next = l.willAt
	}
	if next.IsZero() {
		return
	}
	gen := cl.lifeGen
	l.timer = b.clock.AfterFunc(next.Sub(now), b.guard(func() { b.lifeDue(cl, gen) }))
}

// lifeDue runs when one of cl's deadlines (of generation gen) has come:
// it ends the session if it expired, publishing a will still pending,
// or else publishes the will that is due, and arms what remains.
func (b *Broker) lifeDue(cl *client, gen uint64) {
	b.mu.Lock()
	cl.mu.Lock()
	l := cl.life
	if b.closing || cl.conn != nil || cl.ended || l == nil || cl.lifeGen != gen {
		cl.mu.Unlock()
		b.mu.Unlock()
		return
	}
	now := b.now()
	if !l.expireAt.IsZero() && !now.Before(l.expireAt) {
		b.expireLocked(cl) // unlocks
		return
	}
	b.mu.Unlock()
	var will *willState
	var t *tx
	if w := cl.will; w != nil && !w.held && !l.willAt.IsZero() && !now.Before(l.willAt) {
		cl.cancelWill()
		will = w
		t = b.begin(true)
		if t != nil && cl.persistent() {
			t.bt().PutSession(cl.sessionRecord(l.since))
		}
		b.recordSession(cl)
	}
	l.timer = nil
	b.armLife(cl, now)
	cl.mu.Unlock()
	if will == nil {
		return
	}
	// The will's deliveries and the record without it in one commit: a
	// crash neither loses it nor publishes it again.
	b.publishWillIn(will, t)
	if err := t.commit(true); err != nil {
		t.rollback() // the store has it pending still
	}
}

// expireLocked ends a session whose expiry interval passed while
// disconnected, and publishes its pending will. The caller holds b.mu and
// cl.mu; both are released here.
func (b *Broker) expireLocked(cl *client) {
	will := cl.will
	cl.cancelWill()
	if will != nil && will.held {
		will.heldEnded = true // ReleaseWills decides
		will = nil
	}
	t := b.begin(true)
	shared := b.endSession(cl, t)
	why, since := onlineNow, cl.lifeSince()
	if cl.life != nil {
		why = cl.life.why
	}
	cl.mu.Unlock()
	b.mu.Unlock()
	if will != nil {
		// In the operation that deletes the session and its stored will,
		// synced: a crash cannot lose the will between the two.
		b.publishWillIn(will, t)
		if err := t.commit(true); err != nil {
			t.rollback()
		}
	} else {
		t.commit(false)
	}
	b.log.Debug("session expired", "client_id", cl.id, "offline", why.String(), "since", since)
	if len(shared) > 0 {
		b.redeliverShared(cl, shared)
	}
}
