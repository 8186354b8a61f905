// Package limit holds small rate and concurrency limiters for the broker:
// a token bucket per client (publish rate, publish bytes), a counter of
// concurrent connections per source address, and a rate of connection
// attempts per source address with bounded memory. None of them starts a
// goroutine; all are safe for concurrent use.
package limit

import (
	"hash/maphash"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// epoch anchors monotonic time: durations since it are immune to wall-clock
// jumps.
var epoch = time.Now()

// mono returns t as nanoseconds since epoch (monotonic when t carries a
// monotonic reading, as time.Now does).
func mono(t time.Time) int64 { return int64(t.Sub(epoch)) }

// TokenBucket allows on average Rate events per second with bursts of up to
// Burst. A nil *TokenBucket, or one with a rate <= 0, allows everything, so a
// disabled limit costs a nil check.
//
// An event larger than the burst (n > Burst, e.g. a message larger than a
// byte budget) is allowed when the bucket is full and leaves it in debt, so
// large events still pass at the average rate instead of never.
type TokenBucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per nanosecond; <= 0: unlimited
	burst  float64
	tokens float64 // may be negative (debt) after an event larger than the burst
	last   int64   // mono time of the last update
}

// NewTokenBucket returns a full bucket refilling at rate tokens per second and
// holding at most burst tokens (burst < 1 is taken as 1). rate <= 0 gives a
// bucket that allows everything.
func NewTokenBucket(rate float64, burst int) *TokenBucket {
	b := &TokenBucket{}
	b.SetRate(rate, burst)
	return b
}

// SetRate changes the rate and burst, refilling the bucket.
func (b *TokenBucket) SetRate(rate float64, burst int) {
	if burst < 1 {
		burst = 1
	}
	b.mu.Lock()
	b.rate = rate / 1e9
	b.burst = float64(burst)
	b.tokens = b.burst
	b.last = mono(time.Now())
	b.mu.Unlock()
}

// Allow takes n tokens and reports true when they are available now;
// otherwise it takes nothing and reports false.
func (b *TokenBucket) Allow(n int) bool { return b.AllowAt(time.Now(), n) }

// AllowAt is Allow at time now (for tests and callers that already read the
// clock).
func (b *TokenBucket) AllowAt(now time.Time, n int) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return true
	}
	b.refill(mono(now))
	need := math.Min(float64(n), b.burst)
	if b.tokens < need {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// Take always takes n tokens and returns how long the caller should wait
// before acting so that the average rate is kept: 0 when the tokens were
// there. It is the "slow the client down" alternative to Allow; the broker
// uses it for the publish limits of every client, since no acknowledgement
// can say "rate too high" without dropping messages. The wait is capped at
// one minute.
func (b *TokenBucket) Take(n int) time.Duration { return b.TakeAt(time.Now(), n) }

// TakeAt is Take at time now.
func (b *TokenBucket) TakeAt(now time.Time, n int) time.Duration {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return 0
	}
	b.refill(mono(now))
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	// Do not accumulate more than one minute of debt: a client that keeps
	// sending while told to wait would otherwise owe unboundedly.
	maxDebt := -b.rate * float64(time.Minute)
	if b.tokens < maxDebt {
		b.tokens = maxDebt
	}
	return time.Duration(-b.tokens / b.rate)
}

func (b *TokenBucket) refill(now int64) {
	if now > b.last {
		b.tokens = math.Min(b.burst, b.tokens+float64(now-b.last)*b.rate)
		b.last = now
	}
}

// shards spreads keys over independent locks so unrelated addresses do not
// contend.
const shards = 16

var seed = maphash.MakeSeed()

func shardOf(key string) int { return int(maphash.String(seed, key) % shards) }

// PerKey counts concurrent holders per key (connections per source address)
// and refuses above a maximum. Memory is bounded by the number of keys with
// a holder: a key is forgotten when its count drops to zero.
type PerKey struct {
	max    int // <= 0: no maximum (still counted)
	shards [shards]struct {
		mu sync.Mutex
		n  map[string]int
	}
}

// NewPerKey returns a counter allowing at most max holders per key (max <= 0:
// no maximum).
func NewPerKey(max int) *PerKey {
	p := &PerKey{max: max}
	for i := range p.shards {
		p.shards[i].n = make(map[string]int)
	}
	return p
}

// Acquire counts one more holder of key and reports true, or reports false
// (counting nothing) when key already has the maximum. Every true must be
// matched by one Release. A nil *PerKey allows everything.
func (p *PerKey) Acquire(key string) bool {
	if p == nil {
		return true
	}
	s := &p.shards[shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.n[key]
	if p.max > 0 && n >= p.max {
		return false
	}
	s.n[key] = n + 1
	return true
}

// Release undoes one successful Acquire of key. Releasing a key that has no
// holder does nothing.
func (p *PerKey) Release(key string) {
	if p == nil {
		return
	}
	s := &p.shards[shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	switch n := s.n[key]; {
	case n > 1:
		s.n[key] = n - 1
	case n == 1:
		delete(s.n, key)
	}
}

// Count returns the holders of key.
func (p *PerKey) Count(key string) int {
	if p == nil {
		return 0
	}
	s := &p.shards[shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[key]
}

// Len returns the number of keys with at least one holder.
func (p *PerKey) Len() int {
	if p == nil {
		return 0
	}
	n := 0
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		n += len(s.n)
		s.mu.Unlock()
	}
	return n
}

// DefaultMaxKeys bounds the keys a RateByKey remembers when NewRateByKey is
// given maxKeys <= 0.
const DefaultMaxKeys = 1 << 16

// RateByKey limits events per key (connection attempts per source address)
// to rate per second with a burst, in bounded memory: a key whose bucket has
// refilled is idle and is forgotten at the next sweep of its shard, and when
// a shard is full of busy keys an arbitrary one is evicted (that key's count
// starts over: under an attack from more addresses than maxKeys the limit
// errs on the side of letting a client in rather than locking everyone out).
type RateByKey struct {
	rate     float64 // tokens per nanosecond
	burst    float64
	idle     int64 // nanoseconds after which a bucket is full again
	perShard int
	shards   [shards]rateShard
}

type rateShard struct {
	mu        sync.Mutex
	b         map[string]*bucketState
	lastSweep int64
}

type bucketState struct {
	tokens float64
	last   int64
}

// NewRateByKey returns a limiter allowing rate events per second per key with
// bursts of burst (< 1 taken as 1), remembering at most about maxKeys keys
// (<= 0: DefaultMaxKeys). A rate <= 0 gives a limiter that allows everything.
func NewRateByKey(rate float64, burst, maxKeys int) *RateByKey {
	if burst < 1 {
		burst = 1
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	r := &RateByKey{rate: rate / 1e9, burst: float64(burst), perShard: max(1, (maxKeys+shards-1)/shards)}
	if r.rate > 0 {
		r.idle = int64(r.burst/r.rate) + 1
	}
	for i := range r.shards {
		r.shards[i].b = make(map[string]*bucketState)
	}
	return r
}

// Allow counts one event for key and reports whether it is within the rate.
// A nil *RateByKey allows everything.
func (r *RateByKey) Allow(key string) bool { return r.AllowAt(key, time.Now()) }

// AllowAt is Allow at time now.
func (r *RateByKey) AllowAt(key string, now time.Time) bool {
	if r == nil || r.rate <= 0 {
		return true
	}
	t := mono(now)
	s := &r.shards[shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if t-s.lastSweep > r.idle || len(s.b) >= r.perShard {
		r.sweep(s, t)
	}
	b := s.b[key]
	if b == nil {
		b = &bucketState{tokens: r.burst, last: t}
		s.b[key] = b
	} else if t > b.last {
		b.tokens = math.Min(r.burst, b.tokens+float64(t-b.last)*r.rate)
		b.last = t
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets the keys of s that have been idle long enough to be full
// again; if s is still full, it evicts arbitrary keys down to 7/8 of its
// capacity, so a flood of new keys costs amortised O(1) per event.
func (r *RateByKey) sweep(s *rateShard, now int64) {
	s.lastSweep = now
	for k, b := range s.b {
		if now-b.last >= r.idle {
			delete(s.b, k)
		}
	}
	if len(s.b) < r.perShard {
		return
	}
	target := r.perShard - r.perShard/8 - 1
	for k := range s.b { // map order is random: arbitrary victims
		if len(s.b) <= target {
			break
		}
		delete(s.b, k)
	}
}

// Len returns the number of keys remembered.
func (r *RateByKey) Len() int {
	if r == nil {
		return 0
	}
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.b)
		s.mu.Unlock()
	}
	return n
}

// AddrKey returns the key used to count a client by source address: the IP
// without port, IPv4-mapped IPv6 unmapped, and IPv6 addresses reduced to
// their /64 prefix (one host usually owns a whole /64, so counting single
// IPv6 addresses would let it open 2^64 "different" sources). Addresses that
// are not IP (a Unix socket, a pipe) all share the key "" prefixed with the
// network name.
func AddrKey(a net.Addr) string {
	if a == nil {
		return "?"
	}
	var ip netip.Addr
	switch v := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			if ip, err = netip.ParseAddr(a.String()); err != nil {
				return a.Network() + ":"
			}
		} else {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	if !ip.IsValid() {
		return a.Network() + ":"
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
