package auth

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/limit"
)

// audit writes failed logins and denials to the log, at most rate lines per
// second (bursts of the same), so a flood of bad logins cannot flood the
// log. Lines over the rate are counted; the count is logged as "audit lines
// suppressed" before the next line that gets through, or one interval after
// the first suppressed line, whichever comes first.
type audit struct {
	log        *slog.Logger
	bucket     *limit.TokenBucket
	interval   time.Duration
	suppressed atomic.Int64
	pending    atomic.Bool // a flush timer is scheduled
}

func newAudit(log *slog.Logger, rate int) *audit {
	return &audit{log: log, bucket: limit.NewTokenBucket(float64(rate), rate), interval: time.Second}
}

// ok reports whether a line may be written now, counting it as suppressed
// when not; call it before building the line, so a suppressed line costs
// no allocation.
func (a *audit) ok() bool {
	if !a.bucket.Allow(1) {
		if a.suppressed.Add(1) == 1 && a.pending.CompareAndSwap(false, true) {
			time.AfterFunc(a.interval, a.flush)
		}
		return false
	}
	if k := a.suppressed.Swap(0); k > 0 {
		a.log.LogAttrs(context.Background(), slog.LevelWarn, "audit lines suppressed", slog.Int64("count", k))
	}
	return true
}

// write logs one audit line; call it only after ok.
func (a *audit) write(msg string, attrs ...slog.Attr) {
	a.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}

func (a *audit) flush() {
	a.pending.Store(false)
	if k := a.suppressed.Swap(0); k > 0 {
		a.log.LogAttrs(context.Background(), slog.LevelWarn, "audit lines suppressed", slog.Int64("count", k))
	}
}
