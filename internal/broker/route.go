package broker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

// maxShareCounters bounds the round-robin counters kept for share groups.
const maxShareCounters = 100_000

var (
	matchPool  = sync.Pool{New: func() any { s := make([]topic.Entry[subValue], 0, 16); return &s }}
	targetPool = sync.Pool{New: func() any { s := make([]target, 0, 16); return &s }}
	indexPool  = sync.Pool{New: func() any { return make(map[*client]int) }}
)

// pubScratch is a connection reader's working storage for routing its
// publishes: the matched entries, the targets and the operation record of
// a QoS 0 publish, reused publish after publish instead of taken from (and
// given back to) three pools each time. Taken while the reader is busy,
// given back before it may park, so an idle connection holds none.
type pubScratch struct {
	entries []topic.Entry[subValue]
	targets []target
	t       tx
	// entries are the subscriptions matching topic at the index's
	// generation gen while cached: a publisher that keeps to its topic
	// is matched once per change to the subscriptions, not per publish.
	topic  string
	gen    uint64
	cached bool
	// remote are the acknowledgements of the reader's QoS 1/2 publishes
	// still waiting for other nodes (remote.go): at most maxHeldAcks.
	remote []<-chan struct{}
}

var scratchPool = sync.Pool{New: func() any { return new(pubScratch) }}

// maxScratch bounds the slices a pubScratch keeps when it goes back to
// its pool: a large fan-out's are left to the collector.
const maxScratch = 1024

// takeScratch gives the reader its scratch, from the pool if it has none.
func (h *handler) takeScratch() *pubScratch {
	if h.hs.scratch == nil {
		h.hs.scratch = scratchPool.Get().(*pubScratch)
	}
	return h.hs.scratch
}

// releaseScratch gives the reader's scratch back before it may park;
// with idle set, not while acknowledgements wait for other nodes (their
// count must hold across waits), only when the connection ends.
func (h *handler) releaseScratch(idle bool) {
	sc := h.hs.scratch
	if sc == nil || idle && sc.waitingRemote() {
		return
	}
	h.hs.scratch = nil
	clear(sc.remote)
	sc.remote = sc.remote[:0]
	// The cached match refers to clients: not kept by an idle scratch.
	clear(sc.entries)
	sc.entries, sc.topic, sc.cached = sc.entries[:0], "", false
	if cap(sc.entries) > maxScratch {
		sc.entries = nil
	}
	if cap(sc.targets) > maxScratch {
		sc.targets = nil
	}
	scratchPool.Put(sc)
}

// publish routes a message published on this node: retained store, local
// subscribers, and the backplane. It returns the number of sessions reached.
func (b *Broker) publish(m *session.Message, t *tx) int { return b.publishFrom(m, t, nil) }

// publishFrom is publish for a client's PUBLISH: hs, when not nil,
// collects the sessions that were full, to hold the publisher for.
func (b *Broker) publishFrom(m *session.Message, t *tx, hs *holdSet) int {
	// $SYS is each node's own tree: never forwarded or replicated.
	bp := b.backplane
	if bp != nil && strings.HasPrefix(m.Topic, "$SYS/") {
		bp = nil
	}
	var remote bool
	if bp != nil {
		m.Pin() // the backplane may keep it: never recycled (pooled QoS 0)
		b.handMu.RLock()
		defer b.handMu.RUnlock()
		// First: Forward names the message (its origin) before anything
		// else on this node can see it.
		var safe <-chan struct{}
		if lf, ok := bp.(LaterForwarder); ok && t != nil && t.later {
			remote, safe, t.forward = lf.ForwardLater(m)
		} else {
			remote, safe = bp.Forward(m)
		}
		if t != nil && safe != nil {
			t.remote = safe
		}
	}
	if m.Retain {
		if t != nil {
			t.retained = &retainUndo{topic: m.Topic, old: b.retained.get(m.Topic), new: m}
		}
		b.retained.set(m)
		if t != nil {
			if len(m.Payload) == 0 {
				t.bt().DeleteRetained(m.Topic)
			} else {
				t.bt().PutRetained(toStore(m))
			}
		}
		if bp != nil {
			bp.Retain(m)
		}
	}
	if bp != nil {
		// $share groups span the cluster: the backplane picks the node,
		// and the message comes back through InjectShared.
		n := b.routeTo(m, t, sharedNone, hs)
		if remote {
			n++ // someone elsewhere subscribes (for v5's 0x10 No matching subscribers)
		}
		if !isSys(m.Topic) {
			b.topics.add(m.Topic, len(m.Payload), n)
		}
		return n
	}
	n := b.routeTo(m, t, sharedAll, hs)
	if !isSys(m.Topic) {
		b.topics.add(m.Topic, len(m.Payload), n)
	}
	return n
}

// sharedMode says which $share groups a route delivers to.
type sharedMode struct {
	none          bool            // no group
	group, filter string          // only this group; both empty with none false: all
	only          map[string]bool // if set, only these client IDs' sessions
}

var (
	sharedAll  = sharedMode{}
	sharedNone = sharedMode{none: true}
)

// target is one session's merged view of the subscriptions that matched.
type target struct {
	cl *client
	d  session.Delivery
}

// route delivers a message to every matching session once: overlapping
// subscriptions of one client merge into one delivery with the highest QoS
// and every subscription identifier [MQTT-3.3.4-2, 3.3.4-3]; each $share
// group gets one copy, sent to one member.
func (b *Broker) route(m *session.Message, tx *tx, sm sharedMode) int {
	return b.routeTo(m, tx, sm, nil)
}

// routeTo is route noting in hs the sessions found full.
func (b *Broker) routeTo(m *session.Message, tx *tx, sm sharedMode, hs *holdSet) int {
	// A client's reader routes with its own scratch slices; other callers
	// take them from pools.
	var sc *pubScratch
	if hs != nil {
		sc = hs.scratch
	}
	var bp *[]topic.Entry[subValue]
	var tp *[]target
	var entries []topic.Entry[subValue]
	var targets []target
	switch {
	case sc == nil:
		bp, tp = matchPool.Get().(*[]topic.Entry[subValue]), targetPool.Get().(*[]target)
		entries, targets = b.subs.Match(m.Topic, (*bp)[:0]), (*tp)[:0]
	case sc.cached && sc.topic == m.Topic && sc.gen == b.subs.Gen():
		entries, targets = sc.entries, sc.targets[:0]
	default:
		clear(sc.entries)
		entries, sc.gen = b.subs.MatchGen(m.Topic, sc.entries[:0])
		sc.topic, sc.cached = m.Topic, true
		targets = sc.targets[:0]
	}
	var groups map[string][]topic.Entry[subValue]
	var index map[*client]int // target position per client, for large fan-outs
	if len(entries) > 16 {
		index = indexPool.Get().(map[*client]int)
		defer func() { clear(index); indexPool.Put(index) }()
	}
	for _, e := range entries {
		v := e.Value
		if sm.group != "" && (e.Group != sm.group || e.Filter != sm.filter) {
			continue
		}
		if e.Group != "" {
			if sm.none {
				continue
			}
			if groups == nil {
				groups = make(map[string][]topic.Entry[subValue])
			}
			k := e.Group + "\x00" + e.Filter
			groups[k] = append(groups[k], e)
			continue
		}
		if v.opts.NoLocal && v.cl.id == m.Publisher {
			continue // [MQTT-3.8.3-3]
		}
		if sm.only != nil && !sm.only[v.cl.id] {
			continue
		}
		if index == nil {
			targets = mergeTarget(targets, v, m)
			continue
		}
		if i, ok := index[v.cl]; ok {
			mergeInto(&targets[i].d, v, m)
			continue
		}
		index[v.cl] = len(targets)
		targets = append(targets, target{cl: v.cl, d: deliveryFor(v, m)})
	}
	for k, members := range groups {
		e := b.pickMember(k, members)
		t := target{cl: e.Value.cl, d: deliveryFor(e.Value, m)}
		t.d.Group, t.d.Filter = e.Group, e.Filter
		targets = append(targets, t)
	}
	if sc == nil {
		clear(entries)
	}
	// The clock is read only when a delivery needs it (message expiry,
	// sampled delivery): a QoS 0 publish without either reads none.
	var now time.Time
	needNow := !m.Expiry.IsZero()
	for i := 0; i < len(targets) && !needNow; i++ {
		needNow = targets[i].d.Sample > 0
	}
	if needNow {
		now = b.now()
	}
	for _, t := range targets {
		b.deliverTo(t.cl, t.d, now, tx, hs)
	}
	n := len(targets)
	clear(targets)
	if sc != nil {
		sc.entries, sc.targets = entries, targets[:0]
	} else {
		*bp = entries[:0]
		matchPool.Put(bp)
		*tp = targets[:0]
		targetPool.Put(tp)
	}
	return n
}

func deliveryFor(v subValue, m *session.Message) session.Delivery {
	d := session.Delivery{Msg: m, QoS: min(m.QoS, v.opts.QoS), Latest: v.latest, Sample: v.sample}
	// The retain flag is cleared unless Retain As Published [MQTT-3.3.1-12].
	d.Retain = m.Retain && v.opts.RetainAsPublished
	if v.id != 0 {
		d.SubIDs = []int{v.id}
	}
	return d
}

func mergeTarget(ts []target, v subValue, m *session.Message) []target {
	for i := range ts {
		if ts[i].cl == v.cl {
			mergeInto(&ts[i].d, v, m)
			return ts
		}
	}
	return append(ts, target{cl: v.cl, d: deliveryFor(v, m)})
}

// mergeInto folds one more matching subscription of the same client into
// its delivery: highest QoS, every subscription identifier.
func mergeInto(d *session.Delivery, v subValue, m *session.Message) {
	d.QoS = max(d.QoS, min(m.QoS, v.opts.QoS))
	d.Latest = d.Latest && v.latest // any subscription that wants every message wins
	if v.sample == 0 || d.Sample == 0 {
		d.Sample = 0
	} else {
		d.Sample = min(d.Sample, v.sample)
	}
	d.Retain = d.Retain || (m.Retain && v.opts.RetainAsPublished)
	if v.id != 0 {
		d.SubIDs = append(d.SubIDs, v.id)
	}
}

// pickMember chooses the member of a share group that gets the message:
// round robin over connected members, or over all if none is connected.
func (b *Broker) pickMember(key string, members []topic.Entry[subValue]) topic.Entry[subValue] {
	ctr, loaded := b.shareRR.LoadOrStore(key, new(atomic.Uint64))
	if !loaded && b.shareGroups.Add(1) > maxShareCounters {
		// Counters only spread load; forgetting them all now and then keeps
		// clients that cycle through group names from growing the map.
		b.shareRR.Clear()
		b.shareGroups.Store(0)
	}
	n := ctr.(*atomic.Uint64).Add(1)
	online := 0
	for _, e := range members {
		if e.Value.cl.isOnline() {
			online++
		}
	}
	if online == 0 {
		return members[n%uint64(len(members))]
	}
	k := int(n % uint64(online))
	for _, e := range members {
		if e.Value.cl.isOnline() {
			if k == 0 {
				return e
			}
			k--
		}
	}
	return members[0]
}

// redeliverShared hands deliveries taken from a departed session to another
// connected member of the same share group.
func (b *Broker) redeliverShared(from *client, ds []session.Delivery) {
	now := b.now()
	t := b.begin(true)
	defer t.commit(true)
	var buf []topic.Entry[subValue]
	for _, d := range ds {
		buf = b.subs.Match(d.Msg.Topic, buf[:0])
		var members []topic.Entry[subValue]
		for _, e := range buf {
			if e.Group == d.Group && e.Filter == d.Filter && e.Value.cl != from && e.Value.cl.isOnline() {
				members = append(members, e)
			}
		}
		if len(members) == 0 {
			// Nobody else can take it: a session that lives on keeps it for
			// its return; an ended one loses it (counted).
			if !b.requeue(from, d, t) {
				b.Stats.Dropped.Add(1)
				b.Traffic.DroppedNoMember.Add(1)
			}
			continue
		}
		e := b.pickMember(d.Group+"\x00"+d.Filter, members)
		nd := deliveryFor(e.Value, d.Msg)
		nd.Group, nd.Filter = d.Group, d.Filter
		b.deliver(e.Value.cl, nd, now, t)
	}
}

// requeue gives a delivery back to the session it was taken from, unless
// that session has ended.
func (b *Broker) requeue(cl *client, d session.Delivery, t *tx) bool {
	if cl == nil {
		return false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.ended {
		return false
	}
	if cl.conn != nil {
		// Back already: deliver as usual.
		if p := cl.sess.Deliver(cl.jr(t), d, b.now()); p != nil {
			t.send(cl.conn, p)
		}
		return true
	}
	cl.sess.Requeue(cl.jr(t), d)
	return true
}

func (cl *client) isOnline() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.conn != nil
}

// deliver gives one session a delivery and queues what it says to send.
func (b *Broker) deliver(cl *client, d session.Delivery, now time.Time, t *tx) {
	b.deliverTo(cl, d, now, t, nil)
}

// deliverTo is deliver noting cl in hs if its queue is full.
func (b *Broker) deliverTo(cl *client, d session.Delivery, now time.Time, t *tx, hs *holdSet) {
	if b.authz != nil && !b.allow(cl.info.Load(), ActRead, d.Msg.Topic) {
		return // checked per message, so a revoked permission stops at once
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.ended {
		return
	}
	if d.Sample > 0 && d.QoS == 0 && b.sampleLocked(cl, d, now) {
		return
	}
	if d.QoS > 0 && cl.sess.Taken(d.Msg.Origin) {
		// A copy of a message the session already took, come by another
		// path (relayed, or replayed after a node's loss): delivering it
		// again would be a new message to the client.
		b.Stats.Repeats.Add(1)
		if b.log.Enabled(context.Background(), slog.LevelDebug) {
			b.log.Debug("duplicate copy not delivered", "client_id", cl.id, "topic", d.Msg.Topic,
				"origin", d.Msg.Origin.Instance, "seq", d.Msg.Origin.Seq)
		}
		return
	}
	before := cl.sess.Stats
	// Held only if this publisher will wait for this session, so what it
	// adds past the bound is bounded (flow.go).
	d.Held = hs.holds(cl)
	p := cl.sess.Deliver(cl.jr(t), d, now)
	if t != nil && t.gated {
		if seq := cl.sess.Accepted(); seq != 0 {
			t.delivered = append(t.delivered, delivered{cl, seq})
		}
	}
	if p != nil && cl.conn != nil {
		// Behind the operation's commit: nothing goes out that a failed
		// commit would have to take back.
		b.sent(cl, p) // before sending: the writer recycles what it wrote
		t.send(cl.conn, p)
	}
	hs.add(b, cl, d.QoS)
	if hs != nil && hs.rx != nil && cl.sess.Stats.DroppedOverflow > before.DroppedOverflow && cl.persistent() {
		hs.rx.overflow = append(hs.rx.overflow, cl)
	}
	b.countDrops(before, cl.sess.Stats)
}
