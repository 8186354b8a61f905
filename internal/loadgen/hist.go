package loadgen

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// Hist is a log-linear histogram of non-negative int64 values (nanoseconds
// here): 128 linear sub-buckets per power of two, so a reported value is
// within 1/128 (< 0.8%) of the true one, over the whole int64 range, in a
// fixed 59 KiB. Record is safe for concurrent use and does not allocate; the
// exact minimum and maximum are kept alongside.
type Hist struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Int64
	min    atomic.Int64 // 0 means none yet; values are stored +1
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histBuckets = (64 - histSubBits + 1) << histSubBits
)

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	n := bits.Len64(v)
	top := v >> (n - histSubBits - 1) // in [histSub, 2*histSub)
	return (n-histSubBits)<<histSubBits + int(top) - histSub
}

// histValue returns the highest value that falls in bucket i.
func histValue(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := i >> histSubBits
	m := uint64(i&(histSub-1)) + histSub
	hi := (m+1)<<(e-1) - 1
	if hi > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(hi)
}

// Record adds one value; negative values count as 0.
func (h *Hist) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(uint64(v))].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && v+1 >= m) || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

// Count returns the number of values recorded.
func (h *Hist) Count() uint64 { return h.n.Load() }

// Max returns the largest value recorded (0 if none).
func (h *Hist) Max() int64 { return h.max.Load() }

// Min returns the smallest value recorded (0 if none).
func (h *Hist) Min() int64 {
	if m := h.min.Load(); m > 0 {
		return m - 1
	}
	return 0
}

// Mean returns the mean of the values recorded (0 if none).
func (h *Hist) Mean() float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns the value at quantile q (0..1): the highest value of the
// bucket holding the ceil(q*n)-th smallest value, capped at the exact max.
// Call it once recording has stopped.
func (h *Hist) Quantile(q float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(histValue(i), h.Max())
		}
	}
	return h.Max()
}
