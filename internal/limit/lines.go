package limit

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Lines bounds the log lines a client can cause (failed logins, denials,
// refused connections) to Rate per second, with bursts of the same, so a
// flood of bad clients cannot flood the log. Lines over the rate are
// counted; the count is logged as "<name> lines suppressed" ("audit lines
// suppressed" for the audit trail) Interval after the first suppressed
// line, so a sustained flood adds one summary per Interval, not one per
// line that gets through. Safe for concurrent use; share one between the
// writers of the same trail so that together they keep to the rate.
type Lines struct {
	log        *slog.Logger
	bucket     *TokenBucket
	Interval   time.Duration // set before use; default one second
	suppressed atomic.Int64
	pending    atomic.Bool // a flush timer is scheduled
	summary    string      // the message of the suppressed-lines count
	kinds      []string    // names of the kinds OKKind counts apart
	byKind     []atomic.Int64
}

// NewLines returns the audit trail's limiter, writing at most rate lines
// per second to log (nil: discarded).
func NewLines(log *slog.Logger, rate int) *Lines { return NewTrail(log, rate, "audit") }

// NewTrail is NewLines for another trail, whose count of suppressed lines
// is logged as "<name> lines suppressed".
func NewTrail(log *slog.Logger, rate int, name string) *Lines {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Lines{log: log, bucket: NewTokenBucket(float64(rate), rate), Interval: time.Second, summary: name + " lines suppressed"}
}

// NewTrailKinds is NewTrail whose summary also counts the suppressed
// lines of each kind apart ("connection lines suppressed" count=9
// connected=4 disconnected=5), for lines checked with OKKind.
func NewTrailKinds(log *slog.Logger, rate int, name string, kinds ...string) *Lines {
	l := NewTrail(log, rate, name)
	l.kinds, l.byKind = kinds, make([]atomic.Int64, len(kinds))
	return l
}

// OKKind is OK for a line of the given kind (an index into the kinds of
// NewTrailKinds).
func (l *Lines) OKKind(kind int) bool {
	if l.OK() {
		return true
	}
	if kind >= 0 && kind < len(l.byKind) {
		l.byKind[kind].Add(1)
	}
	return false
}

// OK reports whether a line may be written now, counting it as suppressed
// when not; call it before building the line, so a suppressed line costs
// no allocation.
func (l *Lines) OK() bool {
	if !l.bucket.Allow(1) {
		if l.suppressed.Add(1) == 1 && l.pending.CompareAndSwap(false, true) {
			time.AfterFunc(l.Interval, l.flush)
		}
		return false
	}
	return true
}

// Log writes one line; call it only after OK.
func (l *Lines) Log(level slog.Level, msg string, attrs ...slog.Attr) {
	l.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// Enabled reports whether the logger writes lines at level, so that a
// caller can skip OK (and its token) for a line nobody would see.
func (l *Lines) Enabled(level slog.Level) bool {
	return l.log.Enabled(context.Background(), level)
}

func (l *Lines) flush() {
	l.pending.Store(false)
	if k := l.suppressed.Swap(0); k > 0 {
		attrs := []slog.Attr{slog.Int64("count", k)}
		for i := range l.byKind {
			if n := l.byKind[i].Swap(0); n > 0 {
				attrs = append(attrs, slog.Int64(l.kinds[i], n))
			}
		}
		l.log.LogAttrs(context.Background(), slog.LevelWarn, l.summary, attrs...)
	}
}
