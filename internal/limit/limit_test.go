package limit

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	t0 := time.Now()
	b := NewTokenBucket(10, 5) // 10/s, burst 5
	b.last = mono(t0)
	for i := range 5 {
		if !b.AllowAt(t0, 1) {
			t.Fatalf("event %d of the burst refused", i)
		}
	}
	if b.AllowAt(t0, 1) {
		t.Fatal("6th event at once allowed")
	}
	if b.AllowAt(t0.Add(50*time.Millisecond), 1) {
		t.Fatal("allowed after half a token")
	}
	if !b.AllowAt(t0.Add(100*time.Millisecond), 1) {
		t.Fatal("refused after one token refilled")
	}
	// A long pause refills to the burst, not beyond.
	t1 := t0.Add(time.Hour)
	for i := range 5 {
		if !b.AllowAt(t1, 1) {
			t.Fatalf("after a pause, event %d refused", i)
		}
	}
	if b.AllowAt(t1, 1) {
		t.Fatal("burst exceeded after a pause")
	}
	// n larger than the burst passes when full and leaves debt.
	t2 := t1.Add(time.Hour)
	if !b.AllowAt(t2, 25) {
		t.Fatal("oversize event refused on a full bucket")
	}
	if b.AllowAt(t2.Add(time.Second), 1) { // 5-25+10 = -10
		t.Fatal("allowed while in debt")
	}
	if !b.AllowAt(t2.Add(2100*time.Millisecond), 1) { // 5-25+21 = 1
		t.Fatal("refused after the debt was repaid")
	}
	// Refused events take nothing.
	b2 := NewTokenBucket(1, 3)
	b2.last = mono(t0)
	if b2.AllowAt(t0, 2) && b2.AllowAt(t0, 2) {
		t.Fatal("two events of 2 from a bucket of 3")
	}
	if !b2.AllowAt(t0, 1) {
		t.Fatal("the refused event took tokens")
	}
}

func TestTokenBucketUnlimited(t *testing.T) {
	var nilBucket *TokenBucket
	var zero TokenBucket
	for _, b := range []*TokenBucket{nilBucket, &zero, NewTokenBucket(0, 10), NewTokenBucket(-1, 1)} {
		for range 1000 {
			if !b.Allow(1 << 20) {
				t.Fatal("unlimited bucket refused")
			}
		}
		if d := b.Take(1 << 30); d != 0 {
			t.Fatalf("unlimited Take = %v", d)
		}
	}
}

func TestTokenBucketTake(t *testing.T) {
	t0 := time.Now()
	b := NewTokenBucket(100, 10)
	b.last = mono(t0)
	if d := b.TakeAt(t0, 10); d != 0 {
		t.Fatalf("Take within burst waits %v", d)
	}
	if d := b.TakeAt(t0, 50); d < 499*time.Millisecond || d > 501*time.Millisecond {
		t.Fatalf("Take of 50 at 100/s waits %v, want 500ms", d)
	}
	if d := b.TakeAt(t0, 1e9); d > time.Minute+time.Millisecond {
		t.Fatalf("debt not capped: wait %v", d)
	}
}

func TestTokenBucketRate(t *testing.T) {
	// Over 10 simulated seconds at 1000 attempts/s, a 100/s bucket with burst
	// 100 allows about 100*10 + 100.
	t0 := time.Now()
	b := NewTokenBucket(100, 100)
	b.last = mono(t0)
	n := 0
	for i := range 10000 {
		if b.AllowAt(t0.Add(time.Duration(i)*time.Millisecond), 1) {
			n++
		}
	}
	if n < 1090 || n > 1101 {
		t.Fatalf("allowed %d, want about 1100", n)
	}
}

func TestPerKey(t *testing.T) {
	p := NewPerKey(2)
	if !p.Acquire("a") || !p.Acquire("a") {
		t.Fatal("first two refused")
	}
	if p.Acquire("a") {
		t.Fatal("third allowed")
	}
	if !p.Acquire("b") {
		t.Fatal("other key refused")
	}
	if p.Count("a") != 2 || p.Len() != 2 {
		t.Fatalf("count %d len %d", p.Count("a"), p.Len())
	}
	p.Release("a")
	if !p.Acquire("a") {
		t.Fatal("refused after a release")
	}
	p.Release("a")
	p.Release("a")
	p.Release("a") // extra release: no-op
	p.Release("zzz")
	p.Release("b")
	if p.Len() != 0 || p.Count("a") != 0 {
		t.Fatalf("keys left: %d", p.Len())
	}
	if !p.Acquire("a") || !p.Acquire("a") || p.Acquire("a") {
		t.Fatal("extra releases went negative")
	}
	var nilP *PerKey
	if !nilP.Acquire("x") {
		t.Fatal("nil PerKey refused")
	}
	nilP.Release("x")
	unl := NewPerKey(0)
	for range 100 {
		if !unl.Acquire("x") {
			t.Fatal("unlimited PerKey refused")
		}
	}
	if unl.Count("x") != 100 {
		t.Fatalf("unlimited count %d", unl.Count("x"))
	}
}

func TestPerKeyConcurrent(t *testing.T) {
	p := NewPerKey(10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	held := 0
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint(g % 3)
			for range 1000 {
				if p.Acquire(key) {
					mu.Lock()
					held++
					mu.Unlock()
					p.Release(key)
				}
			}
		}()
	}
	wg.Wait()
	if p.Len() != 0 {
		t.Fatalf("%d keys left after balanced acquire/release", p.Len())
	}
	if held == 0 {
		t.Fatal("nothing acquired")
	}
}

func TestRateByKey(t *testing.T) {
	t0 := time.Now()
	r := NewRateByKey(2, 3, 100) // 2/s per key, burst 3
	for i := range 3 {
		if !r.AllowAt("a", t0) {
			t.Fatalf("attempt %d refused", i)
		}
	}
	if r.AllowAt("a", t0) {
		t.Fatal("4th attempt allowed")
	}
	if !r.AllowAt("b", t0) {
		t.Fatal("another key limited by a")
	}
	if !r.AllowAt("a", t0.Add(500*time.Millisecond)) {
		t.Fatal("refused after refill")
	}
	if r.AllowAt("a", t0.Add(500*time.Millisecond)) {
		t.Fatal("allowed twice after one refill")
	}
	var nilR *RateByKey
	if !nilR.Allow("x") || !NewRateByKey(0, 1, 1).Allow("x") {
		t.Fatal("disabled limiter refused")
	}
}

func TestRateByKeyBoundedMemory(t *testing.T) {
	t0 := time.Now()
	r := NewRateByKey(1, 1, 1000)
	for i := range 100000 {
		r.AllowAt(fmt.Sprint("k", i), t0) // all busy: none idle yet
	}
	if n := r.Len(); n > 1000+shards {
		t.Fatalf("%d keys remembered, max about 1000", n)
	}
	// Idle keys are forgotten: after they refill, a sweep drops them.
	t1 := t0.Add(10 * time.Second)
	for i := range shards * 20 { // enough to touch every shard
		r.AllowAt(fmt.Sprint("new", i), t1)
	}
	if n := r.Len(); n > shards*20 {
		t.Fatalf("%d keys after idle sweep, want <= %d", n, shards*20)
	}
	// An evicted busy key starts over (documented fail-open), but a key that
	// stays is still limited.
	if !r.AllowAt("new0", t1.Add(time.Second)) || r.AllowAt("new0", t1.Add(time.Second)) {
		t.Fatal("kept key not limited")
	}
}

func TestRateByKeyConcurrent(t *testing.T) {
	r := NewRateByKey(1000, 10, 64)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				r.Allow(fmt.Sprint(g, "-", i%100))
			}
		}()
	}
	wg.Wait()
	if r.Len() > 64+shards {
		t.Fatalf("%d keys", r.Len())
	}
}

func TestAddrKey(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1883}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, "unix:"},
		{strAddr("198.51.100.1:5555"), "198.51.100.1"},
		{strAddr("198.51.100.2"), "198.51.100.2"},
		{nil, "?"},
	}
	for _, tt := range tests {
		if got := AddrKey(tt.addr); got != tt.want {
			t.Errorf("AddrKey(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

type strAddr string

func (s strAddr) Network() string { return "tcp" }
func (s strAddr) String() string  { return string(s) }

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("all-off config: %v", err)
	}
	c := Config{MaxConnectionsPerAddress: -1, ConnectRatePerAddress: -2, PublishRate: -1,
		PublishBytesRate: -1, MaxSubscriptionsPerClient: -1, MaxTopicLength: 70000, MaxTopicLevels: -1}
	err := c.Validate()
	for _, key := range []string{"max_connections_per_address", "connect_rate_per_address", "publish_rate",
		"publish_bytes_rate", "max_subscriptions_per_client", "max_topic_length", "max_topic_levels"} {
		if err == nil || !strings.Contains(err.Error(), "limits."+key+":") {
			t.Errorf("error does not name limits.%s: %v", key, err)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatal("not a *FieldError")
	}
}

func TestTopicOK(t *testing.T) {
	c := Config{MaxTopicLength: 10, MaxTopicLevels: 3}
	for topic, want := range map[string]bool{
		"a/b/c": true, "a/b/c/d": false, "0123456789": true, "0123456789a": false, "//": true, "///": false,
	} {
		if got := c.TopicOK(topic); got != want {
			t.Errorf("TopicOK(%q) = %v", topic, got)
		}
	}
	if !(Config{}).TopicOK(strings.Repeat("a/", 10000)) {
		t.Error("zero config limits topics")
	}
	if n := testing.AllocsPerRun(100, func() { c.TopicOK("a/b/c") }); n != 0 {
		t.Errorf("TopicOK allocates %v", n)
	}
}

func TestConstructors(t *testing.T) {
	pk, rk := Config{}.NewConnLimits()
	if pk != nil || rk != nil {
		t.Fatal("off limits built")
	}
	pk, rk = DefaultConfig().NewConnLimits()
	if pk == nil || rk == nil {
		t.Fatal("default limits missing")
	}
	m, b := Config{PublishRate: 0.5, PublishBytesRate: 1000}.NewPublishLimits()
	if m == nil || b == nil || !m.Allow(1) || m.Allow(1) {
		t.Fatal("publish limits")
	}
	if Burst(0.1) != 1 || Burst(2.5) != 3 {
		t.Fatal("Burst")
	}
}

func BenchmarkTokenBucketAllow(b *testing.B) {
	tb := NewTokenBucket(1e12, 1<<30)
	b.ReportAllocs()
	for b.Loop() {
		tb.Allow(1)
	}
}

func BenchmarkTokenBucketAllowParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tb := NewTokenBucket(1e12, 1<<30) // one per client: uncontended
		for pb.Next() {
			tb.Allow(1)
		}
	})
}

func BenchmarkPerKey(b *testing.B) {
	p := NewPerKey(0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Acquire("192.0.2.1")
			p.Release("192.0.2.1")
		}
	})
}

func BenchmarkRateByKey(b *testing.B) {
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("10.0.%d.%d", i/256, i%256)
	}
	r := NewRateByKey(1e6, 1e6, 1<<16) // keys stay busy: no eviction churn
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Allow(keys[i%len(keys)])
			i++
		}
	})
}

func BenchmarkRateByKeyNewKeys(b *testing.B) {
	// A flood of never-seen addresses at the memory bound.
	r := NewRateByKey(1, 1, 1024)
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Allow(keys[i%len(keys)])
		i++
	}
}
