package admin

import (
	"encoding/json"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/metrics"
)

// fakeSource is a metrics source the test sets.
type fakeSource struct {
	mu sync.Mutex
	c  metrics.Counters
}

func (f *fakeSource) Counters() metrics.Counters { f.mu.Lock(); defer f.mu.Unlock(); return f.c }

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The history keeps one point a second for an hour and one a minute for
// a day, in bounded rings, with rates per second; a stretch the sampler
// did not run (the process stopped) has no point, so charts show a gap.
func TestHistoryRingsAndGaps(t *testing.T) {
	src := &fakeSource{}
	clk := &fakeClock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	h := newHistory(src, clk.now)
	step := func(in, out uint64, conn int64) {
		src.mu.Lock()
		src.c.MessagesIn += in
		src.c.MessagesOut += out
		src.c.BytesIn += in * 10
		src.c.Connected = conn
		src.mu.Unlock()
		clk.add(time.Second)
		h.sample()
	}
	h.sample() // the first reading: no rate yet
	for range 120 {
		step(5, 7, 3)
	}
	a := h.query(time.Hour, 0)
	if len(a.T) != 120 || a.Step != 1 {
		t.Fatalf("%d points at step %v, want 120 at 1 s", len(a.T), a.Step)
	}
	if a.In[0] != 5 || a.Out[0] != 7 || a.BytesIn[0] != 50 || a.Connected[0] != 3 || a.T[1]-a.T[0] != 1000 {
		t.Errorf("first point: in %v out %v bytes %v conn %v dt %d", a.In[0], a.Out[0], a.BytesIn[0], a.Connected[0], a.T[1]-a.T[0])
	}
	// 10:00:01 to 10:02:00: two minutes summed into the 1-minute ring (the
	// third one is still being summed).
	d := h.query(24*time.Hour, 0)
	if d.Step != 60 || len(d.T) != 2 || d.T[1]-d.T[0] != 60000 || d.In[0] != 5 || d.Connected[0] != 3 {
		t.Errorf("day: step %v, %d points %+v", d.Step, len(d.T), d)
	}

	// Stopped for 30 s: no point in between, nor one averaged over it.
	clk.add(30 * time.Second)
	src.mu.Lock()
	src.c.MessagesIn += 3000
	src.mu.Unlock()
	h.sample()
	step(5, 7, 3)
	a = h.query(time.Hour, 0)
	last, before := a.T[len(a.T)-1], a.T[len(a.T)-2]
	if last-before != 31000 || a.In[len(a.In)-1] != 5 {
		t.Errorf("after the stop: %d ms since the point before, rate %v; want a 31 s gap and 5/s", last-before, a.In[len(a.In)-1])
	}
	// since= gives only newer points; range= bounds them.
	if s := h.query(time.Hour, before); len(s.T) != 1 || s.T[0] != last {
		t.Errorf("since: %v", s.T)
	}
	if r := h.query(time.Minute, 0); len(r.T) == 0 || r.T[0] < clk.now().Add(-time.Minute).UnixMilli() {
		t.Errorf("range 1m: %v", r.T)
	}

	// Bounded: two hours later, still an hour of seconds.
	for range 7200 {
		step(1, 1, 1)
	}
	if a := h.query(time.Hour, 0); len(a.T) != historyFineKeep {
		t.Errorf("fine ring holds %d, want %d", len(a.T), historyFineKeep)
	}
	if h.coarse.n > historyCoarseKeep || h.coarse.n < 120 {
		t.Errorf("coarse ring holds %d", h.coarse.n)
	}
}

// GET /api/v1/history serves the history, admins only.
func TestHistoryAPI(t *testing.T) {
	b, _ := startBroker(t)
	clk := &fakeClock{t: time.Now()}
	a := New(b, Options{Checker: StaticChecker{"admin", "s3cret"}, Clock: clk.now})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	for range 5 {
		a.hist.sample()
		clk.add(time.Second)
	}
	code, body, _ := do(t, srv, "GET", "/api/v1/history?range=5m", creds, "")
	var h HistoryAnswer
	if err := json.Unmarshal([]byte(body), &h); code != 200 || err != nil || len(h.T) != 4 || len(h.In) != 4 || h.Step != 1 {
		t.Errorf("history: %d %v %s", code, err, body)
	}
	if code, _, _ := do(t, srv, "GET", "/api/v1/history?range=2d", creds, ""); code != 400 {
		t.Errorf("range=2d: %d", code)
	}
	if code, _, _ := do(t, srv, "GET", "/api/v1/history", "", ""); code != 401 {
		t.Errorf("no credentials: %d", code)
	}
}
