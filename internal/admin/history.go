package admin

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/metrics"
)

// The broker's own history of its main figures, kept in memory so that a
// page opened or reloaded later draws the last hour (or day) at once:
// one point a second for an hour and one a minute for a day, in bounded
// rings. A stretch with no point is a stretch the broker was not
// sampling (not running, or stopped): charts show it as a gap.
const (
	historyFine       = time.Second
	historyFineKeep   = 3600 // 1 h at 1 s
	historyCoarse     = time.Minute
	historyCoarseKeep = 1440 // 24 h at 1 min
)

// Point is one sample of the history: rates per second over the step
// before T, and the connected clients at T.
type Point struct {
	T         int64   // Unix milliseconds
	In, Out   float64 // messages received, sent
	Dropped   float64
	BytesIn   float64
	BytesOut  float64
	Connected int64
}

// ring is a bounded FIFO of points.
type ring struct {
	buf   []Point
	start int
	n     int
}

func newRing(size int) ring { return ring{buf: make([]Point, size)} }

func (r *ring) push(p Point) {
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = p
		r.n++
		return
	}
	r.buf[r.start] = p
	r.start = (r.start + 1) % len(r.buf)
}

// since returns the points after t (Unix ms), oldest first.
func (r *ring) since(t int64) []Point {
	out := make([]Point, 0, r.n)
	for i := 0; i < r.n; i++ {
		if p := r.buf[(r.start+i)%len(r.buf)]; p.T > t {
			out = append(out, p)
		}
	}
	return out
}

// history samples a metrics source. Its clock is injected: tests drive
// it with a fake one and call sample, without sleeping.
type history struct {
	src   metrics.Source
	clock func() time.Time

	mu     sync.Mutex
	fine   ring
	coarse ring
	prev   metrics.Counters
	prevAt time.Time
	// The minute being summed for the coarse ring.
	acc     Point
	accN    int
	accFrom int64 // start of its minute, Unix ms
}

func newHistory(src metrics.Source, clock func() time.Time) *history {
	if clock == nil {
		clock = time.Now
	}
	return &history{src: src, clock: clock, fine: newRing(historyFineKeep), coarse: newRing(historyCoarseKeep)}
}

// run samples once a second until ctx ends.
func (h *history) run(ctx context.Context) {
	tk := time.NewTicker(historyFine)
	defer tk.Stop()
	h.sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			h.sample()
		}
	}
}

// sample reads the counters at the clock's time and adds a point: rates
// since the last sample. After a stretch without samples longer than two
// steps (a stopped process) the counters are only noted: a rate averaged
// over the stretch would draw traffic across the gap.
func (h *history) sample() {
	now := h.clock()
	c := h.src.Counters()
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, prevAt := h.prev, h.prevAt
	h.prev, h.prevAt = c, now
	dt := now.Sub(prevAt).Seconds()
	if prevAt.IsZero() || dt <= 0 || now.Sub(prevAt) > 2*historyFine+historyFine/2 {
		return
	}
	rate := func(a, b uint64) float64 {
		if a < b {
			return 0
		}
		return float64(a-b) / dt
	}
	p := Point{T: now.UnixMilli(), In: rate(c.MessagesIn, prev.MessagesIn), Out: rate(c.MessagesOut, prev.MessagesOut),
		Dropped: rate(c.Dropped, prev.Dropped), BytesIn: rate(c.BytesIn, prev.BytesIn), BytesOut: rate(c.BytesOut, prev.BytesOut),
		Connected: c.Connected}
	h.fine.push(p)
	minute := now.Truncate(historyCoarse).UnixMilli()
	if h.accN > 0 && minute != h.accFrom {
		h.flushLocked()
	}
	if h.accN == 0 {
		h.accFrom = minute
	}
	h.acc.In += p.In
	h.acc.Out += p.Out
	h.acc.Dropped += p.Dropped
	h.acc.BytesIn += p.BytesIn
	h.acc.BytesOut += p.BytesOut
	h.acc.Connected = max(h.acc.Connected, p.Connected)
	h.accN++
}

// flushLocked adds the summed minute to the coarse ring: the mean rates
// over the seconds sampled in it and the most clients connected, at the
// minute's end.
func (h *history) flushLocked() {
	n := float64(h.accN)
	h.coarse.push(Point{T: h.accFrom + historyCoarse.Milliseconds(), In: h.acc.In / n, Out: h.acc.Out / n, Dropped: h.acc.Dropped / n,
		BytesIn: h.acc.BytesIn / n, BytesOut: h.acc.BytesOut / n, Connected: h.acc.Connected})
	h.acc, h.accN = Point{}, 0
}

// HistoryAnswer is the answer of GET /api/v1/history: one array per
// series, index by index (compact for 3600 points).
type HistoryAnswer struct {
	Now       int64     `json:"now"`          // the broker's clock, Unix ms
	Step      float64   `json:"step_seconds"` // 1 or 60
	T         []int64   `json:"t"`
	In        []float64 `json:"messages_received_per_second"`
	Out       []float64 `json:"messages_sent_per_second"`
	Dropped   []float64 `json:"messages_dropped_per_second"`
	BytesIn   []float64 `json:"bytes_received_per_second"`
	BytesOut  []float64 `json:"bytes_sent_per_second"`
	Connected []int64   `json:"clients_connected"`
}

// query returns the points of the last span (up to 1 h: the 1 s ring;
// longer: the 1 min ring) after since (Unix ms; 0: all).
func (h *history) query(span time.Duration, since int64) HistoryAnswer {
	now := h.clock()
	from := now.Add(-span).UnixMilli()
	h.mu.Lock()
	var ps []Point
	step := historyFine
	if span > historyFineKeep*historyFine {
		step = historyCoarse
		ps = h.coarse.since(max(from, since))
	} else {
		ps = h.fine.since(max(from, since))
	}
	h.mu.Unlock()
	a := HistoryAnswer{Now: now.UnixMilli(), Step: step.Seconds(), T: make([]int64, len(ps)), In: make([]float64, len(ps)),
		Out: make([]float64, len(ps)), Dropped: make([]float64, len(ps)), BytesIn: make([]float64, len(ps)),
		BytesOut: make([]float64, len(ps)), Connected: make([]int64, len(ps))}
	for i, p := range ps {
		a.T[i], a.In[i], a.Out[i], a.Dropped[i], a.BytesIn[i], a.BytesOut[i], a.Connected[i] = p.T, p.In, p.Out, p.Dropped, p.BytesIn, p.BytesOut, p.Connected
	}
	return a
}

// getHistory: GET /api/v1/history?range=5m|1h|24h[&since=<Unix ms>]
func (a *Admin) getHistory(w http.ResponseWriter, r *http.Request) {
	span := time.Hour
	if v := r.URL.Query().Get("range"); v != "" {
		d, err := time.ParseDuration(v)
		if v == "24h" || v == "1d" {
			d, err = 24*time.Hour, nil
		}
		if err != nil || d < time.Minute || d > 24*time.Hour {
			writeError(w, http.StatusBadRequest, "range: want a duration from 1m to 24h (5m, 1h, 24h)")
			return
		}
		span = d
	}
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			n, perr := parseInt64(v)
			if perr != nil {
				writeError(w, http.StatusBadRequest, "since: want Unix milliseconds or RFC 3339")
				return
			}
			since = n
		} else {
			since = t.UnixMilli()
		}
	}
	writeJSON(w, http.StatusOK, a.hist.query(span, since))
}
