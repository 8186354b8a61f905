package broker

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// fakeClock is a Clock that moves only when told: Advance runs the
// callbacks that come due, in deadline order, on the caller's goroutine,
// so a test sees their effects as soon as Advance returns.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool // stopped or fired; under c.mu
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves the clock by d, firing what comes due on the way.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var live []*fakeTimer
		for _, t := range c.timers {
			if !t.stopped {
				live = append(live, t)
			}
		}
		c.timers = live
		sort.SliceStable(live, func(i, j int) bool { return live[i].at.Before(live[j].at) })
		if len(live) == 0 || live[0].at.After(end) {
			c.now = end
			c.mu.Unlock()
			return
		}
		t := live[0]
		t.stopped = true
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		t.f()
	}
}

// Set moves the clock to at without firing anything (another process's
// clock: the next broker after a crash).
func (c *fakeClock) Set(at time.Time) {
	c.mu.Lock()
	c.now = at
	c.mu.Unlock()
}

// crashStore keeps unsynced commits in memory until a synced one follows:
// crash drops them, as a kill may lose what the store had not synced.
type crashStore struct {
	store.Store
	mu       sync.Mutex
	unsynced []store.Batch
}

type crashBatch struct {
	store.Batch
	s *crashStore
}

func (s *crashStore) NewBatch() store.Batch { return &crashBatch{Batch: s.Store.NewBatch(), s: s} }

func (b *crashBatch) Commit(sync bool) error {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if !sync {
		b.s.unsynced = append(b.s.unsynced, b.Batch)
		return nil
	}
	for _, u := range b.s.unsynced {
		if err := u.Commit(true); err != nil {
			return err
		}
	}
	b.s.unsynced = nil
	return b.Batch.Commit(true)
}

func (s *crashStore) crash() {
	s.mu.Lock()
	s.unsynced = nil
	s.mu.Unlock()
}

// lifeBroker is a broker on clk and st, restored and serving loopback.
func lifeBroker(t *testing.T, clk *fakeClock, st store.Store, bp Backplane) *loopBroker {
	t.Helper()
	b := New(config.Default().Limits, nil)
	b.SetClock(clk)
	return servedBroker(t, b, st, bp)
}

// servedBroker gives b the store st and the backplane bp (each if not
// nil), restores it and serves it on loopback until the test ends.
func servedBroker(t *testing.T, b *Broker, st store.Store, bp Backplane) *loopBroker {
	t.Helper()
	if st != nil {
		b.SetStore(st)
	}
	if bp != nil {
		b.SetBackplane(bp)
	}
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	lb := serveLoopback(t, b)
	t.Cleanup(lb.stop)
	return lb
}

// watch gives b an offline persistent session subscribed to wills/#: each
// will published lands in its queue (queued counts them), synchronously.
func watch(b *Broker) {
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "watcher", Version: 5, ExpiryInterval: session.NeverExpire},
		Subs: []store.Subscription{{Filter: "wills/#", Options: packet.Subscription{Filter: "wills/#", QoS: 1}}}})
}

func queued(b *Broker) int {
	_, n := b.QueueTotals()
	return n
}

// wantWills fails the test unless b has queued want wills (when says at
// which point of the test).
func wantWills(t *testing.T, b *Broker, want int, when string) {
	t.Helper()
	if n := queued(b); n != want {
		t.Fatalf("%d wills %s, want %d", n, when, want)
	}
}

// restartAt starts a broker on st, as after a restart, with a fake clock
// set to at.
func restartAt(t *testing.T, st store.Store, at time.Time, bp Backplane) (*loopBroker, *fakeClock) {
	clk := newFakeClock()
	clk.Set(at)
	return lifeBroker(t, clk, st, bp), clk
}

// patience is how long a test waits for something that should happen
// soon: the time left before the test binary's -timeout, less a margin to
// fail by name, and at most 2 minutes (a fixed few seconds is missed by a
// slow -race run on a loaded machine). It is brokertest.Patience, which
// this package cannot import.
func patience(t testing.TB) time.Duration {
	d := 2 * time.Minute
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := dt.Deadline(); ok {
			left := time.Until(deadline)
			left -= min(left/2, 30*time.Second)
			d = min(d, left)
		}
	}
	return max(d, time.Second)
}

// waitFor polls cond until it holds, failing the test after patience.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience(t))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// connectWill connects id over v5 with a will on wills/<id> (delay and
// session expiry in seconds), then drops the connection without
// DISCONNECT and waits until the broker has seen it end.
func connectWill(t *testing.T, lb *loopBroker, id string, delay, expiry uint32) {
	t.Helper()
	c := dialRaw(t, lb.addr, packet.V5)
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 60,
		Will: &packet.Will{Topic: "wills/" + id, Payload: []byte("gone"), QoS: 1}}
	cp.Will.Properties.WillDelay = &delay
	cp.Properties.SessionExpiry = &expiry
	c.mustSend(cp)
	if ack, ok := c.read().(*packet.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("connect %s: %+v", id, ack)
	}
	c.nc.Close()
	waitOffline(t, lb.b, id)
}

// waitOffline waits until the broker has handled the end of id's
// connection: its offline life is set up (under the client's lock, which
// Client takes) before anyone sees it disconnected.
func waitOffline(t *testing.T, b *Broker, id string) {
	t.Helper()
	waitFor(t, id+"'s connection to end", func() bool {
		s, ok := b.Client(id)
		return ok && !s.Connected
	})
}

// The will waits out its delay, counted from the drop, and the session
// its expiry interval.
func TestLifetimeWillDelayAndExpiry(t *testing.T) {
	clk := newFakeClock()
	lb := lifeBroker(t, clk, memory.New(), nil)
	watch(lb.b)
	connectWill(t, lb, "c", 4, 10)
	clk.Advance(4*time.Second - time.Millisecond)
	wantWills(t, lb.b, 0, "before the delay ran out")
	clk.Advance(time.Millisecond)
	wantWills(t, lb.b, 1, "once the delay ran out")
	clk.Advance(6*time.Second - time.Millisecond)
	if !lb.b.HasSession("c") {
		t.Fatal("session gone before its expiry")
	}
	clk.Advance(time.Millisecond)
	if lb.b.HasSession("c") {
		t.Fatal("session still there after its expiry")
	}
	if n := queued(lb.b); n != 1 {
		t.Fatalf("%d wills, want 1 (published once)", n)
	}
}

// A will whose delay outlasts the session goes out when the session ends
// [MQTT-3.1.3-9].
func TestLifetimeWillAtSessionEnd(t *testing.T) {
	clk := newFakeClock()
	lb := lifeBroker(t, clk, memory.New(), nil)
	watch(lb.b)
	connectWill(t, lb, "c", 100, 3)
	clk.Advance(3*time.Second - time.Millisecond)
	if n := queued(lb.b); n != 0 || !lb.b.HasSession("c") {
		t.Fatalf("before expiry: %d wills, session %v", n, lb.b.HasSession("c"))
	}
	clk.Advance(time.Millisecond)
	if n := queued(lb.b); n != 1 || lb.b.HasSession("c") {
		t.Fatalf("at expiry: %d wills (want 1), session %v (want gone)", n, lb.b.HasSession("c"))
	}
}

// A reconnect within the delay cancels the will and the expiry; a clean
// start publishes the will at once, as the old session ends.
func TestLifetimeTakeover(t *testing.T) {
	clk := newFakeClock()
	lb := lifeBroker(t, clk, memory.New(), nil)
	watch(lb.b)
	connectWill(t, lb, "c", 4, 5)
	clk.Advance(2 * time.Second)
	back := dialRaw(t, lb.addr, packet.V5)
	if ack := back.connect("c", false, 5); !ack.SessionPresent {
		t.Fatal("session not present on reconnect")
	}
	clk.Advance(time.Minute)
	if n := queued(lb.b); n != 0 || !lb.b.HasSession("c") {
		t.Fatalf("after reconnecting: %d wills (want 0), session %v (want kept)", n, lb.b.HasSession("c"))
	}
	back.nc.Close()
	waitOffline(t, lb.b, "c")

	connectWill(t, lb, "d", 4, 60)
	clk.Advance(time.Second)
	clean := dialRaw(t, lb.addr, packet.V5)
	if ack := clean.connect("d", true, 60); ack.SessionPresent {
		t.Fatal("session present after a clean start")
	}
	// The old session's will goes out as the clean start ends it; the
	// broker does not promise before the new connection's CONNACK.
	waitFor(t, "the will of the session a clean start ended", func() bool { return queued(lb.b) >= 1 })
	wantWills(t, lb.b, 1, "after a clean start ended the session")
	clk.Advance(time.Minute)
	if n := queued(lb.b); n != 1 {
		t.Fatalf("%d wills, want 1: the cancelled deadline fired", n)
	}
}

// After a kill, the will delay and the expiry count from the drop, not
// from the restart, even when the kill comes right after the drop and
// unsynced commits are lost; and once the will has gone out after the
// restart, a second restart still counts the expiry from the drop.
func TestLifetimeRestoreCountsFromDrop(t *testing.T) {
	clk := newFakeClock()
	st := &crashStore{Store: memory.New()}
	first := lifeBroker(t, clk, st, nil)
	watch(first.b)
	dropped := clk.Now()
	connectWill(t, first, "c", 4, 10)
	clk.Advance(time.Second)
	st.crash() // the first broker is killed: what it did not sync is gone

	second, clk2 := restartAt(t, st, dropped.Add(time.Second), nil)
	clk2.Advance(3*time.Second - time.Millisecond)
	wantWills(t, second.b, 0, "before the delay ran out, counted from the drop")
	clk2.Advance(time.Millisecond)
	wantWills(t, second.b, 1, "4 s after the drop (3 s after the restart)")
	clk2.Advance(time.Second)
	st.crash()

	third, clk3 := restartAt(t, st, dropped.Add(5*time.Second), nil)
	wantWills(t, third.b, 1, "queued after the second restart (the one published once)")
	clk3.Advance(5*time.Second - time.Millisecond)
	if !third.b.HasSession("c") {
		t.Fatal("session gone before its expiry")
	}
	clk3.Advance(time.Millisecond)
	if third.b.HasSession("c") {
		t.Fatal("session still there 10 s after the drop: its expiry counted from a restart")
	}
}

// A session adopted from another node keeps the countdown it had there;
// one whose client was connected until the move gets its whole interval.
func TestLifetimeAdoptKeepsCountdown(t *testing.T) {
	clk := newFakeClock()
	lb := lifeBroker(t, clk, memory.New(), nil)
	b := lb.b
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "moved", Version: 5, ExpiryInterval: 3,
		DisconnectedAt: clk.Now().Add(-2500 * time.Millisecond)}})
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "fresh", Version: 5, ExpiryInterval: 3}})
	clk.Advance(500*time.Millisecond - time.Millisecond)
	if !b.HasSession("moved") {
		t.Fatal("moved session expired early")
	}
	clk.Advance(time.Millisecond)
	if b.HasSession("moved") {
		t.Fatal("moved session still there: its countdown restarted with the move")
	}
	clk.Advance(2500*time.Millisecond - time.Millisecond)
	if !b.HasSession("fresh") {
		t.Fatal("a session adopted without a disconnect time expired early")
	}
	clk.Advance(time.Millisecond)
	if b.HasSession("fresh") {
		t.Fatal("fresh session outlived its interval")
	}
}

// An orphan's will counts from its adoption (its node was lost, so when
// the connection dropped is unknown), its session from the recorded drop.
func TestLifetimeOrphanWill(t *testing.T) {
	clk := newFakeClock()
	lb := lifeBroker(t, clk, memory.New(), nil)
	b := lb.b
	watch(b)
	w := &store.Will{Message: store.Message{Topic: "wills/o", Payload: []byte("gone"), QoS: 1}, Delay: 4 * time.Second}
	b.AdoptOrphan(&SessionSnapshot{Session: store.Session{ClientID: "o", Version: 5, ExpiryInterval: 60,
		DisconnectedAt: clk.Now().Add(-50 * time.Second), Will: w}}, false, false)
	clk.Advance(4*time.Second - time.Millisecond)
	wantWills(t, b, 0, "before the delay ran out")
	clk.Advance(time.Millisecond)
	wantWills(t, b, 1, "after the delay")
	clk.Advance(6*time.Second - time.Millisecond)
	if !b.HasSession("o") {
		t.Fatal("orphan expired early")
	}
	clk.Advance(time.Millisecond)
	if b.HasSession("o") {
		t.Fatal("orphan still there 60 s after its recorded drop")
	}
}

// A session being handed over ages from the hand-over: a transfer that
// fails leaves it to expire here on time.
func TestLifetimeHandOverAborted(t *testing.T) {
	clk := newFakeClock()
	lb := lifeBroker(t, clk, memory.New(), nil)
	b := lb.b
	c := dialRaw(t, lb.addr, packet.V5)
	c.connect("h", false, 5)
	clk.Advance(time.Minute) // connected: nothing runs down
	h := b.PrepareHandOver("h", false)
	if h.Snapshot == nil {
		t.Fatal("no snapshot for a persistent session")
	}
	b.AbortHandOver(h)
	clk.Advance(5*time.Second - time.Millisecond)
	if !b.HasSession("h") {
		t.Fatal("session expired before its interval from the hand-over")
	}
	clk.Advance(time.Millisecond)
	if b.HasSession("h") {
		t.Fatal("session outlived its interval after a failed hand-over")
	}
}

// stubBackplane is a one-node cluster: enough for Restore to hold wills.
type stubBackplane struct{}

func (stubBackplane) Forward(*session.Message) (bool, <-chan struct{}) { return false, nil }
func (stubBackplane) Interest(string, string, bool)                    {}
func (stubBackplane) Retain(*session.Message)                          {}
func (stubBackplane) Claim(string, bool) (*SessionSnapshot, error)     { return nil, nil }
func (stubBackplane) SessionChanged(*SessionSnapshot)                  {}
func (stubBackplane) SessionEnded(string)                              {}

// In a cluster a restored will waits for ReleaseWills, then for what is
// left of its delay counted from the drop; a will of a session owned
// elsewhere is dropped.
func TestLifetimeReleaseWills(t *testing.T) {
	clk := newFakeClock()
	st := memory.New()
	first := lifeBroker(t, clk, st, nil)
	watch(first.b)
	dropped := clk.Now()
	connectWill(t, first, "mine", 4, 60)
	connectWill(t, first, "theirs", 4, 60)

	second, clk2 := restartAt(t, st, dropped.Add(time.Second), stubBackplane{})
	clk2.Advance(time.Second)
	wantWills(t, second.b, 0, "before ReleaseWills")
	second.b.ReleaseWills(func(id string) bool { return id == "mine" })
	clk2.Advance(2*time.Second - time.Millisecond)
	wantWills(t, second.b, 0, "before the delay ran out, counted from the drop")
	clk2.Advance(time.Millisecond)
	wantWills(t, second.b, 1, "4 s after the drop (the owned session's)")
	clk2.Advance(time.Minute)
	if n := queued(second.b); n != 1 {
		t.Fatalf("%d wills, want 1: the other node's session's will was published", n)
	}
}

// A session that expired while the broker was down is gone at start, its
// will published; one that did not is kept, for what is left of it.
func TestLifetimeExpiredWhileDown(t *testing.T) {
	clk := newFakeClock()
	st := memory.New()
	first := lifeBroker(t, clk, st, nil)
	watch(first.b)
	dropped := clk.Now()
	connectWill(t, first, "short", 100, 2)
	connectWill(t, first, "long", 100, 60)

	second, clk2 := restartAt(t, st, dropped.Add(3*time.Second), nil)
	if second.b.HasSession("short") {
		t.Fatal("a session that expired during downtime came back")
	}
	wantWills(t, second.b, 1, "at start (the expired session's)")
	clk2.Advance(57*time.Second - time.Millisecond)
	if !second.b.HasSession("long") {
		t.Fatal("unexpired session lost")
	}
	clk2.Advance(time.Millisecond)
	if second.b.HasSession("long") || queued(second.b) != 2 {
		t.Fatalf("60 s after the drop: session %v (want gone), %d wills (want 2)", second.b.HasSession("long"), queued(second.b))
	}
}

// A shutdown is not the client's failure: its will waits in the store, and
// the next start publishes it once its delay, counted from the shutdown,
// has passed.
func TestLifetimeWillAcrossShutdown(t *testing.T) {
	clk := newFakeClock()
	st := memory.New()
	first := lifeBroker(t, clk, st, nil)
	watch(first.b)
	c := dialRaw(t, first.addr, packet.V5)
	delay, expiry := uint32(5), uint32(60)
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "c", KeepAlive: 60,
		Will: &packet.Will{Topic: "wills/c", Payload: []byte("gone"), QoS: 1}}
	cp.Will.Properties.WillDelay = &delay
	cp.Properties.SessionExpiry = &expiry
	c.mustSend(cp)
	c.read()
	stopped := clk.Now()
	first.stop()
	clk.Advance(time.Hour)
	wantWills(t, first.b, 0, "published by a shut-down broker")

	second, clk2 := restartAt(t, st, stopped.Add(2*time.Second), nil)
	clk2.Advance(3*time.Second - time.Millisecond)
	wantWills(t, second.b, 0, "before the delay ran out")
	clk2.Advance(time.Millisecond)
	wantWills(t, second.b, 1, "5 s after the shutdown")
}

// DISCONNECT may raise the session expiry interval: the session then
// outlives the interval given at CONNECT.
func TestLifetimeExpiryRaisedAtDisconnect(t *testing.T) {
	clk := newFakeClock()
	lb := lifeBroker(t, clk, nil, nil)
	c := dialRaw(t, lb.addr, packet.V5)
	c.connect("r", false, 1)
	d := &packet.Disconnect{}
	e := uint32(60)
	d.Properties.SessionExpiry = &e
	c.mustSend(d)
	c.expectClosed()
	waitOffline(t, lb.b, "r")
	clk.Advance(60*time.Second - time.Millisecond)
	if !lb.b.HasSession("r") {
		t.Fatal("session gone although DISCONNECT raised its expiry to 60 s")
	}
	clk.Advance(time.Millisecond)
	if lb.b.HasSession("r") {
		t.Fatal("session outlived the expiry set at DISCONNECT")
	}
}

// A session expiry of 0 set at DISCONNECT ends the session with the
// connection: no deadline is left to wait for.
func TestLifetimeExpiryZeroAtDisconnect(t *testing.T) {
	clk := newFakeClock()
	lb := lifeBroker(t, clk, memory.New(), nil)
	c := dialRaw(t, lb.addr, packet.V5)
	c.connect("z", false, 60)
	d := &packet.Disconnect{}
	var zero uint32
	d.Properties.SessionExpiry = &zero
	c.mustSend(d)
	c.expectClosed()
	waitFor(t, "the session to end", func() bool { return !lb.b.HasSession("z") })
	again := dialRaw(t, lb.addr, packet.V5)
	if ack := again.connect("z", false, 60); ack.SessionPresent {
		t.Fatal("session present although DISCONNECT set its expiry to 0")
	}
}

// leakyClock is a fakeClock whose timers cannot be stopped: every
// callback runs, as one already on its way when Stop is called does.
type leakyClock struct{ *fakeClock }

type leakyTimer struct{}

func (leakyTimer) Stop() bool { return false }

func (c leakyClock) AfterFunc(d time.Duration, f func()) Timer {
	c.fakeClock.AfterFunc(d, f)
	return leakyTimer{}
}

// A deadline of an earlier offline life does nothing when its callback
// runs after all (Stop came too late): the client came back and left
// again in between, and its will waits for the new delay, published once.
func TestLifetimeStaleDeadlineIgnored(t *testing.T) {
	clk := newFakeClock()
	b := New(config.Default().Limits, nil)
	b.SetClock(leakyClock{clk})
	lb := servedBroker(t, b, memory.New(), nil)
	watch(b)
	connectWill(t, lb, "c", 4, 60) // will due at +4 s
	clk.Advance(2 * time.Second)
	back := dialRaw(t, lb.addr, packet.V5)
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "c", KeepAlive: 60,
		Will: &packet.Will{Topic: "wills/c", Payload: []byte("gone"), QoS: 1}}
	delay, expiry := uint32(4), uint32(60)
	cp.Will.Properties.WillDelay = &delay
	cp.Properties.SessionExpiry = &expiry
	back.mustSend(cp)
	if ack, ok := back.read().(*packet.Connack); !ok || !ack.SessionPresent {
		t.Fatalf("reconnect: %+v", ack)
	}
	clk.Advance(time.Second)
	back.nc.Close()
	waitOffline(t, b, "c") // will due at +7 s
	clk.Advance(time.Second)
	wantWills(t, b, 0, "at +4 s: the first offline life's deadline fired")
	clk.Advance(3*time.Second - time.Millisecond)
	wantWills(t, b, 0, "before the second delay ran out")
	clk.Advance(time.Millisecond)
	wantWills(t, b, 1, "at +7 s")
}
