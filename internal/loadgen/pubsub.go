package loadgen

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// run is the state of one publish/subscribe scenario.
type run struct {
	cfg   Config
	base  time.Time // monotonic origin of every timestamp
	nonce uint32
	pubs  []*publisher
	subs  []*subscriber
	hist  Hist

	t0 int64 // ns since base; set before readers start
	// The measured window, ns since base: latency is recorded for the
	// messages sent within it. Set once the sampler has taken the
	// window's start, which a busy machine can make late: the latency then
	// covers the same window as the rates.
	winStart, winEnd atomic.Int64

	stopPub atomic.Bool
	closing atomic.Bool
	errMu   sync.Mutex
	errs    []string
	readers sync.WaitGroup
}

func (r *run) now() int64 { return int64(time.Since(r.base)) }

func (r *run) fail(format string, a ...any) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if len(r.errs) < 20 {
		r.errs = append(r.errs, fmt.Sprintf(format, a...))
	}
}

// publisher is one publishing connection, driven by a pacer.
type publisher struct {
	r      *run
	id     int
	c      *conn
	topic  string
	fan    uint64 // matching subscribers
	rate   float64
	window int   // QoS 1 PUBACK window; also end to end unless lead is set
	lead   int   // end-to-end window: how far ahead of the slowest subscriber
	batch  int64 // closed loop: least room worth a write (an eighth of the window)
	wake   chan struct{}

	pkt    packet.Publish
	msg    []byte
	buf    []byte
	nextID uint16

	sent      atomic.Uint64
	delivered atomic.Uint64 // unique deliveries, all subscribers
	nacked    atomic.Uint64
	ackErrs   atomic.Uint64
	waiting   atomic.Bool
	dead      atomic.Bool

	// pacer-owned
	forgiven     uint64 // deliveries given up on after a stall
	ackForgiven  uint64
	stalls       uint64
	progressAt   int64
	lastProgress uint64
}

func (p *publisher) notify() {
	if p.waiting.Load() && p.waiting.CompareAndSwap(true, false) {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// payload, acked: the publisher's reader sees only PUBACKs.
func (p *publisher) payload([]byte, int64) {}

func (p *publisher) acked(code byte) {
	if code >= 0x80 {
		p.ackErrs.Add(1)
	}
	p.nacked.Add(1)
	p.notify()
}

// ackRoom is how many more QoS 1 messages may be outstanding.
func (p *publisher) ackRoom() int64 {
	if p.pkt.QoS == 0 {
		return math.MaxInt64
	}
	return int64(p.window) - int64(p.sent.Load()-p.nacked.Load()-p.ackForgiven)
}

// room is how many messages the closed loop may send now; after
// StallTimeout without progress it forgives what is in flight.
func (p *publisher) room(now int64) int64 {
	sent := p.sent.Load()
	n := p.ackRoom()
	if p.fan > 0 {
		inflight := int64(sent*p.fan - p.delivered.Load() - p.forgiven)
		n = min(n, (int64(p.lead)*int64(p.fan)-inflight)/int64(p.fan))
	}
	progress := p.delivered.Load() + p.nacked.Load()
	if progress != p.lastProgress || n >= p.batch {
		p.lastProgress, p.progressAt = progress, now
	} else if now-p.progressAt > int64(p.r.cfg.StallTimeout) {
		p.stalls++
		p.forgiven = sent*p.fan - p.delivered.Load()
		if p.pkt.QoS > 0 {
			p.ackForgiven = sent - p.nacked.Load()
		}
		p.progressAt = now
		return p.room(now)
	}
	return n
}

// send writes n publishes in one write.
func (p *publisher) send(n int64, ts int64) {
	b := p.buf[:0]
	seq := p.sent.Load()
	binary.LittleEndian.PutUint64(p.msg[16:], uint64(ts))
	for i := range n {
		binary.LittleEndian.PutUint64(p.msg[8:], seq+uint64(i))
		if p.pkt.QoS > 0 {
			if p.nextID++; p.nextID == 0 {
				p.nextID = 1
			}
			p.pkt.PacketID = p.nextID
		}
		var err error
		if b, err = packet.Append(b, &p.pkt, p.c.version); err != nil {
			panic(err) // a bug: the packet was validated at setup
		}
	}
	p.buf = b
	p.sent.Add(uint64(n)) // before the write, so delivered never runs ahead of sent
	if err := p.c.write(b); err != nil {
		if p.dead.CompareAndSwap(false, true) && !p.r.closing.Load() {
			p.r.fail("publisher %d: write: %v", p.id, err)
		}
	}
}

// batchMax bounds one write to about 64 KiB (at least one message).
func (p *publisher) batchMax() int64 {
	return max(1, min(256, int64(65536/len(p.msg))))
}

// subscriber is one subscribing connection.
type subscriber struct {
	r          *run
	id         int
	c          *conn
	streams    []*stream // by publisher id; nil when not subscribed to it
	unexpected uint64
}

func (s *subscriber) acked(byte) {}

func (s *subscriber) payload(b []byte, now int64) {
	r := s.r
	if len(b) < headerSize || binary.LittleEndian.Uint32(b) != r.nonce {
		s.unexpected++
		return
	}
	pid := binary.LittleEndian.Uint32(b[4:])
	if int(pid) >= len(s.streams) || s.streams[pid] == nil {
		s.unexpected++
		return
	}
	seq := binary.LittleEndian.Uint64(b[8:])
	ts := int64(binary.LittleEndian.Uint64(b[16:]))
	if s.streams[pid].add(seq) {
		p := r.pubs[pid]
		p.delivered.Add(1)
		p.notify()
	}
	if ts >= r.winStart.Load() && ts < r.winEnd.Load() {
		r.hist.Record(now - ts)
	}
}

// pacer drives a share of the publishers from one goroutine.
type pacer struct {
	r    *run
	pubs []*publisher
	wake chan struct{}
}

func (pc *pacer) closedLoop() {
	r := pc.r
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for !r.stopPub.Load() {
		now := r.now()
		sentAny := false
		for _, p := range pc.pubs {
			if p.dead.Load() {
				continue
			}
			// Wait for an eighth of the window before writing again,
			// so that writes carry batches rather than single messages.
			if n := p.room(now); n >= p.batch {
				p.send(min(n, p.batchMax()), now)
				sentAny = true
			}
		}
		if sentAny {
			continue
		}
		for _, p := range pc.pubs {
			p.waiting.Store(true)
		}
		ready := false
		for _, p := range pc.pubs {
			ready = ready || (!p.dead.Load() && p.room(now) >= p.batch)
		}
		if !ready {
			timer.Reset(10 * time.Millisecond)
			select {
			case <-pc.wake:
			case <-timer.C:
			}
		}
		for _, p := range pc.pubs {
			p.waiting.Store(false)
		}
	}
}

// openLoop sends at each publisher's rate from r.t0 on; message k is due at
// t0 + k/rate.
func (pc *pacer) openLoop() (backlogMax int64) {
	r := pc.r
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for !r.stopPub.Load() {
		now := r.now()
		next := now + int64(time.Millisecond)
		var backlog int64
		ackLimited := false
		for _, p := range pc.pubs {
			due := int64(float64(now-r.t0)*p.rate/1e9) + 1
			behind := due - int64(p.sent.Load())
			room := p.ackRoom()
			if n := min(behind, room, p.batchMax()); n > 0 && !p.dead.Load() {
				p.send(n, now)
			}
			behind = due - int64(p.sent.Load())
			backlog += max(0, behind)
			switch {
			case behind <= 0:
				at := r.t0 + int64(float64(p.sent.Load())*1e9/p.rate)
				next = min(next, at)
			case room <= behind && !p.dead.Load():
				ackLimited = true
				p.waiting.Store(true)
			default:
				next = now // behind by more than a batch: go round again at once
			}
		}
		backlogMax = max(backlogMax, backlog)
		if next == now {
			continue
		}
		wait := time.Duration(next - r.now())
		if ackLimited {
			// Behind schedule for want of PUBACKs: sleep until one
			// comes rather than spin.
			wait = time.Millisecond
		}
		if wait > 20*time.Microsecond {
			timer.Reset(wait)
			select {
			case <-pc.wake:
			case <-timer.C:
			}
		}
		for _, p := range pc.pubs {
			p.waiting.Store(false)
		}
	}
	return backlogMax
}

func runPubSub(ctx context.Context, cfg Config, u *url.URL) (*Result, error) {
	r := &run{cfg: cfg, base: time.Now(), nonce: rand.Uint32()}
	res := &Result{Pubs: cfg.Pubs, Subs: cfg.Subs, SlowSubs: cfg.SlowSubs, Window: cfg.Window, Lead: cfg.Lead}
	res.fill(&cfg, u)
	res.Mode = "closed"
	if cfg.Rate > 0 {
		res.Mode, res.Rate = "open", cfg.Rate
	}
	prefix := cfg.ClientID
	if prefix == "" {
		prefix = fmt.Sprintf("sb%08x", r.nonce)
	}
	total := cfg.Pubs + cfg.Subs + cfg.SlowSubs
	d := &dialer{u: u, insecure: cfg.Insecure, deflate: cfg.WSDeflate, version: cfg.Version, rbuf: 4 << 10}
	switch {
	case total <= 64:
		d.rbuf = 64 << 10
	case total <= 1000:
		d.rbuf = 16 << 10
	}
	subDialers, err := cfg.subDialers(d)
	if err != nil {
		return nil, err
	}

	// Topology.
	pubTopic := func(i int) string {
		switch cfg.Scenario {
		case FanIn, Pairs, Slow:
			return cfg.Topic + "/" + cfg.Scenario + "/" + strconv.Itoa(i)
		}
		return cfg.Topic + "/" + cfg.Scenario
	}
	subFilter := func(i int) string {
		switch cfg.Scenario {
		case FanIn, Slow:
			return cfg.Topic + "/" + cfg.Scenario + "/+"
		case Pairs:
			return pubTopic(i)
		}
		return pubTopic(0)
	}
	matches := func(sub, pub int) bool { return cfg.Scenario != Pairs || sub == pub }

	for i := range cfg.Pubs {
		p := &publisher{r: r, id: i, topic: pubTopic(i), window: cfg.Window, batch: int64(max(1, cfg.Window/8))}
		if cfg.Rate > 0 {
			p.rate = cfg.Rate / float64(cfg.Pubs)
		}
		p.msg = make([]byte, cfg.Size)
		binary.LittleEndian.PutUint32(p.msg, r.nonce)
		binary.LittleEndian.PutUint32(p.msg[4:], uint32(i))
		p.pkt = packet.Publish{QoS: cfg.QoS, Topic: p.topic, PacketID: 1, Payload: p.msg}
		if _, err := packet.Size(&p.pkt, cfg.Version); err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		r.pubs = append(r.pubs, p)
	}
	for i := range cfg.Subs {
		s := &subscriber{r: r, id: i, streams: make([]*stream, cfg.Pubs)}
		for j, p := range r.pubs {
			if matches(i, j) {
				s.streams[j] = &stream{}
				p.fan++
			}
		}
		r.subs = append(r.subs, s)
	}

	// Connect subscribers, then publishers, Concurrency at a time.
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(total)*5*time.Millisecond)
	defer cancel()
	var conns []*conn
	defer func() {
		for _, c := range conns {
			c.close(false)
		}
	}()
	errs := parallel(setupCtx, cfg.Concurrency, len(r.subs)+len(r.pubs), func(ctx context.Context, i int) error {
		if i < len(r.subs) {
			sd := subDialers[i%len(subDialers)] // round robin, as Config.SubURL
			c, err := sd.open(ctx, fmt.Sprintf("%s-s%d", prefix, i), subFilter(i), cfg.QoS)
			r.subs[i].c = c
			return err
		}
		p := r.pubs[i-len(r.subs)]
		c, err := d.open(ctx, fmt.Sprintf("%s-p%d", prefix, p.id), "", 0)
		p.c = c
		return err
	})
	for _, s := range r.subs {
		if s.c != nil {
			conns = append(conns, s.c)
		}
	}
	for _, p := range r.pubs {
		if p.c != nil {
			conns = append(conns, p.c)
			if cfg.QoS > 0 {
				p.window = min(p.window, p.c.recvMax)
				p.batch = int64(max(1, p.window/8))
			}
		}
		p.lead = p.window
		if cfg.Lead > 0 {
			p.lead = cfg.Lead
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("setup: %d of %d connections failed, first: %w", len(errs), total, errs[0])
	}
	stopSampling, err := r.openSlow(setupCtx, d, prefix, subFilter(0), res, &conns)
	if err != nil {
		return nil, err
	}
	defer stopSampling()

	// Readers, then pacers.
	r.t0 = r.now() + int64(10*time.Millisecond)
	r.winStart.Store(math.MaxInt64)
	r.winEnd.Store(math.MaxInt64)
	for _, s := range r.subs {
		r.startReader(s.c, s, fmt.Sprintf("subscriber %d", s.id))
	}
	for _, p := range r.pubs {
		r.startReader(p.c, p, fmt.Sprintf("publisher %d", p.id))
	}
	npacers := min(len(r.pubs), 4)
	pacers := make([]*pacer, npacers)
	for i := range pacers {
		pacers[i] = &pacer{r: r, wake: make(chan struct{}, 1)}
	}
	for i, p := range r.pubs {
		pc := pacers[i%npacers]
		p.wake = pc.wake
		pc.pubs = append(pc.pubs, p)
	}
	var pwg sync.WaitGroup
	var backlogMax atomic.Int64
	sleepUntil(ctx, r.base, r.t0)
	for _, pc := range pacers {
		pwg.Go(func() {
			if cfg.Rate > 0 {
				backlogMax.Add(pc.openLoop())
			} else {
				pc.closedLoop()
			}
		})
	}

	// The measured window.
	sums := func() (sent, delivered uint64) {
		for _, p := range r.pubs {
			sent += p.sent.Load()
			delivered += p.delivered.Load()
		}
		return
	}
	sleepUntil(ctx, r.base, r.t0+int64(cfg.Warmup))
	startAt := r.now()
	sent0, del0 := sums()
	r.winEnd.Store(startAt + int64(cfg.Duration)) // the end first: nothing is recorded until the start is set
	r.winStart.Store(startAt)
	// The window is timed from when the start was sampled, so a sampler
	// that wakes late on a busy machine shifts it rather than shortens it.
	sleepUntil(ctx, r.base, startAt+int64(cfg.Duration))
	endAt := r.now()
	sent1, del1 := sums()
	if cfg.Rate > 0 {
		for _, p := range r.pubs {
			due := int64(float64(endAt-r.t0)*p.rate/1e9) + 1
			res.BacklogEnd += max(0, due-int64(p.sent.Load()))
		}
	}
	r.stopPub.Store(true)
	for _, pc := range pacers {
		select { // wake pacers waiting for room
		case pc.wake <- struct{}{}:
		default:
		}
	}
	if !waitTimeout(&pwg, 3*time.Second) {
		r.fail("publishers still blocked in a write 3s after the window: connections closed")
		r.closing.Store(true)
		for _, c := range conns {
			c.close(false)
		}
		pwg.Wait()
	}
	res.BacklogMax = backlogMax.Load()

	// Drain: wait for every owed delivery (and PUBACK), within cfg.Drain.
	drainStart := r.now()
	complete := func() bool {
		for _, p := range r.pubs {
			s := p.sent.Load()
			if p.delivered.Load() < s*p.fan || (cfg.QoS > 0 && p.nacked.Load() < s) {
				return false
			}
		}
		return true
	}
	for !complete() && r.now()-drainStart < int64(cfg.Drain) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	res.Complete = complete()
	res.DrainedS = float64(r.now()-drainStart) / 1e9
	stopSampling()

	// Teardown.
	r.closing.Store(true)
	for _, c := range conns {
		c.close(true)
	}
	if !waitTimeout(&r.readers, 5*time.Second) {
		r.fail("readers did not stop within 5s of closing")
	}

	// Results.
	el := float64(endAt-startAt) / 1e9
	res.Warmup = float64(startAt-r.t0) / 1e9
	res.Duration = el
	res.MeasuredSent, res.MeasuredDelivered = sent1-sent0, del1-del0
	res.SentPerSec = float64(res.MeasuredSent) / el
	res.DeliveredPerSec = float64(res.MeasuredDelivered) / el
	per := make([]PubResult, len(r.pubs))
	for i, p := range r.pubs {
		per[i] = PubResult{ID: i, Topic: p.topic, Sent: p.sent.Load(), Fan: int(p.fan)}
		res.Sent += per[i].Sent
		res.Expected += per[i].Sent * p.fan
		res.Acked += p.nacked.Load()
		res.AckErrors += p.ackErrs.Load()
		res.Stalls += p.stalls
	}
	for _, s := range r.subs {
		res.Unexpected += s.unexpected
		for j, st := range s.streams {
			if st == nil {
				continue
			}
			pr := &per[j]
			pr.Delivered += st.unique
			pr.Duplicates += st.dup
			pr.Reordered += st.reord
			if st.unique < pr.Sent {
				pr.Lost += pr.Sent - st.unique
			}
		}
	}
	for _, pr := range per {
		res.Delivered += pr.Delivered
		res.Lost += pr.Lost
		res.Duplicates += pr.Duplicates
		res.Reordered += pr.Reordered
	}
	if len(per) <= maxPerPublisher {
		res.PerPublisher = per
	}
	if r.hist.Count() > 0 {
		us := func(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }
		res.Latency = &LatencyResult{Count: r.hist.Count(), Min: us(r.hist.Min()),
			Mean: us(int64(r.hist.Mean())), P50: us(r.hist.Quantile(0.5)), P90: us(r.hist.Quantile(0.9)),
			P99: us(r.hist.Quantile(0.99)), P999: us(r.hist.Quantile(0.999)), Max: us(r.hist.Max())}
	}
	res.Errors = r.errs
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

func (r *run) startReader(c *conn, h handler, name string) {
	r.readers.Go(func() {
		err := c.readLoop(h, r.base)
		if !r.closing.Load() && !c.closed.Load() {
			r.fail("%s: read: %v", name, err)
		}
		if p, ok := h.(*publisher); ok {
			p.dead.Store(true)
		}
	})
}

// parallel calls f(ctx, i) for i in [0, n) with at most conc calls at once
// and returns the errors.
func parallel(ctx context.Context, conc, n int, f func(ctx context.Context, i int) error) []error {
	var mu sync.Mutex
	var errs []error
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if int(done.Load()) < n && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("stopped after %d of %d: %w", done.Load(), n, ctx.Err()))
	}
	return errs
}

func sleepUntil(ctx context.Context, base time.Time, at int64) {
	d := time.Duration(at) - time.Since(base)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
