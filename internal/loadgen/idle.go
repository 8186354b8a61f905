package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// ReadRSS returns the resident set size of process pid in KiB, from the
// VmRSS line of /proc/PID/status.
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			v = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))
			return strconv.ParseInt(string(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// openMany opens n connections, conc at a time, connection i through
// ds[i%len(ds)], each subscribed to filter when it is not empty; it returns
// those that opened, in no order, the errors and how long it took.
func openMany(ctx context.Context, ds []*dialer, conc, n int, prefix, filter string, qos byte) ([]*conn, []error, time.Duration) {
	conns := make([]*conn, n)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(n)*time.Millisecond)
	defer cancel()
	start := time.Now()
	errs := parallel(ctx, conc, n, func(ctx context.Context, i int) error {
		c, err := ds[i%len(ds)].open(ctx, prefix+strconv.Itoa(i), filter, qos)
		conns[i] = c
		return err
	})
	took := time.Since(start)
	opened := conns[:0]
	for _, c := range conns {
		if c != nil {
			opened = append(opened, c)
		}
	}
	return opened, errs, took
}

func closeAll(conns []*conn) {
	var wg sync.WaitGroup
	for part := range 8 {
		wg.Go(func() {
			for i := part; i < len(conns); i += 8 {
				conns[i].close(true)
			}
		})
	}
	wg.Wait()
}

func rss(cfg *Config, res *Result, kib *int64) {
	if cfg.BrokerPID <= 0 {
		return
	}
	v, err := ReadRSS(cfg.BrokerPID)
	if err != nil {
		res.Errors = append(res.Errors, "rss: "+err.Error())
		return
	}
	*kib = v
}

func (r *Result) connected(n int, errs []error, took time.Duration) {
	r.ConnsOpened = n
	r.ConnectFailures = len(errs)
	r.ConnectSeconds = took.Seconds()
	if took > 0 {
		r.ConnsPerSec = float64(n) / took.Seconds()
	}
	for i, err := range errs {
		if i == 5 {
			r.Errors = append(r.Errors, fmt.Sprintf("... and %d more connection errors", len(errs)-5))
			break
		}
		r.Errors = append(r.Errors, err.Error())
	}
}

func (r *Result) perConn(cfg *Config) {
	if cfg.BrokerPID > 0 && r.ConnsOpened > 0 && r.RSSAfterKiB > 0 {
		r.RSSPerConnBytes = float64(r.RSSAfterKiB-r.RSSBeforeKiB) * 1024 / float64(r.ConnsOpened)
	}
}

// runIdle opens Conns connections that do nothing (keep alive 0, no
// subscription) and reads the broker's RSS before and after.
func runIdle(ctx context.Context, cfg Config, u *url.URL) (*Result, error) {
	res := &Result{Conns: cfg.Conns}
	res.fill(&cfg, u)
	d := &dialer{u: u, insecure: cfg.Insecure, deflate: cfg.WSDeflate, version: cfg.Version, rbuf: 512,
		src: newSources(u.Hostname(), cfg.Conns)}
	rss(&cfg, res, &res.RSSBeforeKiB)
	prefix := cfg.ClientID
	if prefix == "" {
		prefix = fmt.Sprintf("sb%08x-i", rand.Uint32())
	}
	conns, errs, took := openMany(ctx, []*dialer{d}, cfg.Concurrency, cfg.Conns, prefix, "", 0)
	res.connected(len(conns), errs, took)
	for _, c := range conns {
		c.br = nil // nothing more is read: keep the tool's side small too
	}
	sleepCtx(ctx, cfg.Settle)
	rss(&cfg, res, &res.RSSAfterKiB)
	res.perConn(&cfg)
	closeAll(conns)
	res.Duration = took.Seconds()
	if len(conns) == 0 {
		return res, fmt.Errorf("idle: no connection opened")
	}
	return res, nil
}

// stormSub counts the storm's publish at one subscriber.
type stormSub struct {
	nonce uint32
	got   *atomic.Int64
	seen  bool
}

func (s *stormSub) payload(b []byte, _ int64) {
	if !s.seen && len(b) >= headerSize && binary.LittleEndian.Uint32(b) == s.nonce {
		s.seen = true
		s.got.Add(1)
	}
}

func (s *stormSub) acked(byte) {}

// runStorm opens Conns subscribed connections as fast as Concurrency allows,
// then publishes one message to all of them and counts who got it.
func runStorm(ctx context.Context, cfg Config, u *url.URL) (*Result, error) {
	res := &Result{Conns: cfg.Conns, Subs: cfg.Conns, Pubs: 1}
	res.fill(&cfg, u)
	d := &dialer{u: u, insecure: cfg.Insecure, deflate: cfg.WSDeflate, version: cfg.Version, rbuf: 512,
		src: newSources(u.Hostname(), cfg.Conns)}
	nonce := rand.Uint32()
	prefix := cfg.ClientID
	if prefix == "" {
		prefix = fmt.Sprintf("sb%08x", nonce)
	}
	topic := cfg.Topic + "/storm/" + strconv.FormatUint(uint64(nonce), 16)
	subDialers, err := cfg.subDialers(d)
	if err != nil {
		return res, err
	}
	conns, errs, took := openMany(ctx, subDialers, cfg.Concurrency, cfg.Conns, prefix+"-c", topic, cfg.QoS)
	res.connected(len(conns), errs, took)
	defer closeAll(conns)
	if len(conns) == 0 {
		return res, fmt.Errorf("connstorm: no connection opened")
	}

	var got atomic.Int64
	var closing atomic.Bool
	var readers sync.WaitGroup
	var errMu sync.Mutex
	for _, c := range conns {
		readers.Go(func() {
			err := c.readLoop(&stormSub{nonce: nonce, got: &got}, time.Now())
			if !closing.Load() {
				errMu.Lock()
				if len(res.Errors) < 10 {
					res.Errors = append(res.Errors, "subscriber: read: "+err.Error())
				}
				errMu.Unlock()
			}
		})
	}
	pub, err := d.open(ctx, prefix+"-pub", "", 0)
	if err != nil {
		closing.Store(true)
		closeAll(conns)
		readers.Wait()
		return res, fmt.Errorf("connstorm: publisher: %w", err)
	}
	defer pub.close(true)
	msg := make([]byte, cfg.Size)
	binary.LittleEndian.PutUint32(msg, nonce)
	b, err := packet.Append(nil, &packet.Publish{QoS: cfg.QoS, PacketID: 1, Topic: topic, Payload: msg}, cfg.Version)
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := pub.write(b); err != nil {
		errMu.Lock()
		res.Errors = append(res.Errors, "publisher: write: "+err.Error())
		errMu.Unlock()
	}
	res.Sent = 1
	res.Expected = uint64(len(conns))
	deadline := start.Add(max(cfg.Drain, 5*time.Second))
	for got.Load() < int64(len(conns)) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	res.DrainedS = time.Since(start).Seconds()
	res.StormReceived = int(got.Load())
	res.Delivered = uint64(res.StormReceived)
	res.Lost = res.Expected - res.Delivered
	res.Complete = res.Lost == 0
	res.Duration = took.Seconds()
	closing.Store(true)
	closeAll(conns)
	readers.Wait()
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
