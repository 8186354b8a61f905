package loadgen

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// openSlow opens the slow scenario's subscribers: they subscribe to filter
// like the others and then never read, so the broker's writes to them back
// up into its queues and the kernel's buffers. With a broker PID it also
// samples the broker's RSS every 100 ms into res until the returned stop is
// called, so a run shows whether the broker's memory follows the backlog or
// its queue limits. The connections are added to conns for the teardown.
func (r *run) openSlow(ctx context.Context, d *dialer, prefix, filter string, res *Result, conns *[]*conn) (stop func(), err error) {
	cfg := &r.cfg
	for i := range cfg.SlowSubs {
		c, err := d.open(ctx, fmt.Sprintf("%s-slow%d", prefix, i), filter, cfg.QoS)
		if err != nil {
			return nil, fmt.Errorf("setup: slow subscriber %d: %w", i, err)
		}
		*conns = append(*conns, c)
	}
	if cfg.SlowSubs == 0 || cfg.BrokerPID <= 0 {
		return func() {}, nil
	}
	rss(cfg, res, &res.RSSBeforeKiB)
	res.RSSPeakKiB = res.RSSBeforeKiB
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			// res is read only after stop has waited for this goroutine.
			if v, err := ReadRSS(cfg.BrokerPID); err == nil {
				res.RSSPeakKiB = max(res.RSSPeakKiB, v)
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() { close(done); wg.Wait() })
	}, nil
}
