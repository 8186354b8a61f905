// Package loadgen is the engine of the starling-bench load tool: an MQTT
// 3.1.1 and 5.0 client for many connections from one process, built on
// Starling's own codec (internal/packet), that drives any broker over tcp://,
// ws://, ssl:// and wss:// and measures it at the receiving side.
//
// Each connection has one reader goroutine that only decodes and counts
// (and, at QoS 1, batches the PUBACKs it owes). Publishers have no goroutine
// of their own: a few pacer goroutines each drive a share of them, encoding
// batches of PUBLISH packets with packet.Append into a reused buffer and
// writing each batch with one Write.
//
// Closed loop (Rate 0): a publisher keeps at most Window messages in flight,
// counted end to end (sent minus delivered to every matching subscriber;
// Lead instead when set, so a publisher may run far ahead of a slow
// subscriber with few PUBACKs outstanding) and, at QoS 1, also as PUBACKs
// outstanding. A publisher stalled for
// StallTimeout (a message the broker dropped never comes) forgives what it
// has in flight and counts a stall, so a lossy broker slows the run down but
// cannot hang it. Open loop (Rate > 0): publishers send at a fixed total rate
// whatever the broker does; when the tool cannot keep up (a blocked write,
// or the QoS 1 window), the messages behind schedule are reported as backlog.
//
// Every payload starts with a run nonce, the publisher id, a sequence number
// and the monotonic send time (ns since the run began). Subscribers count, per
// publisher stream, unique deliveries, duplicates and reordering (a sliding
// 8192-message window tells a duplicate from a late arrival); after a bounded
// drain, loss is what was sent and never arrived. Latency is the time from
// encoding a PUBLISH (just before its write) to decoding it at the
// subscriber, for messages sent in the measured window, into a log-linear
// histogram (< 0.8% error).
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// Scenarios.
const (
	FanIn     = "fanin"     // Pubs publishers on bench/fanin/<i>, Subs subscribers on bench/fanin/+
	FanOut    = "fanout"    // Pubs publishers on bench/fanout, Subs subscribers on it
	Pairs     = "pairs"     // Pubs pairs: publisher i on bench/pairs/<i>, subscriber i on it
	Latency   = "latency"   // like fanout, open loop at Rate (default 1 pub, 1 sub, 10k msg/s)
	Idle      = "idle"      // Conns idle connections; broker RSS per connection
	ConnStorm = "connstorm" // Conns connections (each subscribed) opened at once, then one publish to all
	Slow      = "slow"      // fan-in plus SlowSubs subscribers on the same filter that never read; broker RSS sampled
)

// Scenarios lists the scenario names.
var Scenarios = []string{FanIn, FanOut, Pairs, Latency, Idle, ConnStorm, Slow}

// Hard bounds, so that every run stops by itself.
const (
	MaxConns    = 200_000
	MaxDuration = 10 * time.Minute
	MaxSize     = 16 << 20
	MaxSubURLs  = 64
	headerSize  = 24 // nonce, publisher id, sequence, send time
)

// Config is one run. Zero values take the scenario's defaults (Defaults).
type Config struct {
	URL         string   // tcp://, ws://, ssl://, wss:// (ws path defaults to /mqtt); publishers connect here
	SubURLs     []string // subscribers connect to these, round robin (subscriber i to SubURLs[i%len]); empty: URL
	AllowRemote bool     // allow a non-loopback host
	Insecure    bool     // skip certificate verification for ssl:// and wss://
	WSDeflate   bool     // ws://, wss://: offer permessage-deflate (compressed when the broker accepts)
	Scenario    string   // one of Scenarios
	Version     byte     // packet.V311 (4) or packet.V5 (5)
	QoS         byte     // 0 or 1 for publishes and subscriptions
	Size        int      // payload bytes (at least 24)
	Pubs        int      // publishers
	Subs        int      // subscribers
	SlowSubs    int      // slow: subscribers that subscribe like subscriber 0 and never read
	Conns       int      // idle and connstorm: connections to open
	Rate        float64  // open loop: total messages/s; 0 = closed loop
	Window      int      // closed loop (and QoS 1 open loop): in flight per publisher
	// Lead, when set, is how far a closed-loop publisher may run ahead of
	// its slowest subscriber, apart from Window, which then bounds only the
	// QoS 1 PUBACKs outstanding (0: Window bounds both).
	Lead         int
	Duration     time.Duration // measured window
	Warmup       time.Duration // before the measured window
	Drain        time.Duration // bound on waiting for the last deliveries
	Concurrency  int           // connections being set up at once
	BrokerPID    int           // for RSS (idle, slow); 0: not measured
	Settle       time.Duration // idle: wait before reading RSS
	ClientID     string        // client ID prefix; default "sb<nonce>"
	Topic        string        // topic prefix; default "bench"
	StallTimeout time.Duration // closed loop: forgive in-flight messages after this long without progress
	// Persistent makes subscribers keep their sessions (clean start off;
	// MQTT 5: expiry persistentExpiry), which a cluster replicates. The
	// sessions outlive the run: MQTT 3.1.1 ones for good.
	Persistent bool
}

// persistentExpiry is the session expiry, in seconds, of Persistent
// subscribers over MQTT 5.
const persistentExpiry uint32 = 300

// Defaults fills in the zero fields of c for its scenario.
func (c *Config) Defaults() {
	if c.URL == "" {
		c.URL = "tcp://127.0.0.1:1883"
	}
	if c.Version == 0 {
		c.Version = packet.V311
	}
	if c.Size == 0 {
		c.Size = 64
	}
	if c.Window == 0 {
		c.Window = 64
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Drain == 0 {
		c.Drain = 3 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.Settle == 0 {
		c.Settle = time.Second
	}
	if c.Topic == "" {
		c.Topic = "bench"
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = time.Second
	}
	switch c.Scenario {
	case FanIn:
		c.Pubs = or(c.Pubs, 8)
		c.Subs = or(c.Subs, 1)
	case FanOut:
		c.Pubs = or(c.Pubs, 1)
		c.Subs = or(c.Subs, 100)
	case Pairs:
		c.Pubs = or(c.Pubs, or(c.Subs, 100))
		c.Subs = c.Pubs
	case Latency:
		c.Pubs = or(c.Pubs, 1)
		c.Subs = or(c.Subs, 1)
		if c.Rate == 0 {
			c.Rate = 10000
		}
	case Idle, ConnStorm:
		c.Conns = or(c.Conns, 1000)
	case Slow:
		c.Pubs = or(c.Pubs, 8)
		c.Subs = or(c.Subs, 1)
		c.SlowSubs = or(c.SlowSubs, 1)
	}
}

func or(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

// Validate checks c after Defaults.
func (c *Config) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	known := false
	for _, s := range Scenarios {
		known = known || s == c.Scenario
	}
	if !known {
		bad("unknown scenario %q (want one of %s)", c.Scenario, strings.Join(Scenarios, ", "))
	}
	if _, err := c.parseURL(); err != nil {
		errs = append(errs, err)
	}
	if len(c.SubURLs) > MaxSubURLs {
		bad("%d subscriber URLs: want at most %d", len(c.SubURLs), MaxSubURLs)
	}
	for _, s := range c.SubURLs {
		if _, err := c.checkURL(s); err != nil {
			errs = append(errs, fmt.Errorf("subscriber %w", err))
		}
	}
	if len(c.SubURLs) > 0 && c.Scenario == Idle {
		bad("subscriber URLs: scenario %s has no subscribers", c.Scenario)
	}
	if c.Version != packet.V311 && c.Version != packet.V5 {
		bad("version %d: want 4 (3.1.1) or 5", c.Version)
	}
	if c.QoS > 1 {
		bad("qos %d: want 0 or 1", c.QoS)
	}
	if c.Size < headerSize || c.Size > MaxSize {
		bad("size %d: want %d to %d bytes", c.Size, headerSize, MaxSize)
	}
	if c.SlowSubs != 0 && c.Scenario != Slow {
		bad("slow subscribers: only in scenario %s", Slow)
	}
	if c.Pubs < 0 || c.Subs < 0 || c.Conns < 0 || c.SlowSubs < 0 || c.Pubs+c.Subs+c.Conns+c.SlowSubs > MaxConns {
		bad("pubs+subs+conns must be 0 to %d", MaxConns)
	}
	if c.Rate < 0 || c.Rate > 10e6 {
		bad("rate %v: want 0 (closed loop) to 10M msgs/s", c.Rate)
	}
	if c.Window < 1 || c.Window > 60000 {
		bad("window %d: want 1 to 60000", c.Window)
	}
	if c.Lead < 0 || c.Lead > 1_000_000 {
		bad("lead %d: want 0 (the window) to 1000000", c.Lead)
	}
	if c.Duration <= 0 || c.Duration > MaxDuration || c.Warmup < 0 || c.Warmup > MaxDuration ||
		c.Drain < 0 || c.Drain > time.Minute {
		bad("duration and warmup must be at most %v, drain at most 1m", MaxDuration)
	}
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		bad("concurrency %d: want 1 to 4096", c.Concurrency)
	}
	return errors.Join(errs...)
}

// parseURL checks URL (see checkURL).
func (c *Config) parseURL() (*url.URL, error) { return c.checkURL(c.URL) }

// checkURL checks the scheme of raw and, unless AllowRemote, that its host
// is a loopback address. Publishers' and subscribers' URLs are held to the
// same rules.
func (c *Config) checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return nil, fmt.Errorf("url %q: scheme must be tcp, ssl, ws or wss", raw)
	}
	host := u.Hostname()
	if host == "" || u.Port() == "" {
		return nil, fmt.Errorf("url %q: want scheme://host:port", raw)
	}
	if !c.AllowRemote && !isLoopback(host) {
		return nil, fmt.Errorf("url %q: host is not a loopback address (use -allow-remote to load another machine)", raw)
	}
	if (u.Scheme == "ws" || u.Scheme == "wss") && (u.Path == "" || u.Path == "/") {
		u.Path = "/mqtt"
	}
	return u, nil
}

// SplitURLs splits a comma-separated list of URLs (the -sub-url flag),
// trimming spaces and dropping empty items.
func SplitURLs(list string) []string {
	var urls []string
	for s := range strings.SplitSeq(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			urls = append(urls, s)
		}
	}
	return urls
}

// subURLs is where subscribers connect: SubURLs, or URL when it is empty.
func (c *Config) subURLs() []string {
	if len(c.SubURLs) == 0 {
		return []string{c.URL}
	}
	return c.SubURLs
}

// SubURL is the URL subscriber i connects to: round robin over SubURLs,
// URL when SubURLs is empty.
func (c *Config) SubURL(i int) string {
	urls := c.subURLs()
	return urls[i%len(urls)]
}

// subDialers returns one dialer per subscriber URL (in subURLs order), each
// a copy of d but for its URL. Validate has checked the URLs.
func (c *Config) subDialers(d *dialer) ([]*dialer, error) {
	var ds []*dialer
	for _, s := range c.subURLs() {
		u, err := c.checkURL(s)
		if err != nil {
			return nil, err
		}
		sd := *d
		sd.u = u
		sd.keep = c.Persistent
		ds = append(ds, &sd)
	}
	return ds, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Result is what one run measured; it is printed as one line of JSON.
type Result struct {
	Scenario  string  `json:"scenario"`
	URL       string  `json:"url"`
	Transport string  `json:"transport"`
	Version   byte    `json:"version"`
	QoS       byte    `json:"qos"`
	Size      int     `json:"size"`
	Pubs      int     `json:"pubs,omitempty"`
	Subs      int     `json:"subs,omitempty"`
	SlowSubs  int     `json:"slow_subs,omitempty"`
	Conns     int     `json:"conns,omitempty"`
	Mode      string  `json:"mode,omitempty"` // closed or open
	Rate      float64 `json:"rate,omitempty"` // offered, open loop
	Window    int     `json:"window,omitempty"`
	Lead      int     `json:"lead,omitempty"`
	Warmup    float64 `json:"warmup_s"`
	Duration  float64 `json:"duration_s"` // measured window, as elapsed

	SubURLs []string `json:"sub_urls,omitempty"` // where subscribers connected, round robin (all but idle)

	Sent       uint64  `json:"sent"`       // publishes written, whole run
	Expected   uint64  `json:"expected"`   // deliveries owed: sent × matching subscribers
	Delivered  uint64  `json:"delivered"`  // unique deliveries, whole run
	Lost       uint64  `json:"lost"`       // expected - delivered after the drain
	Duplicates uint64  `json:"duplicates"` // deliveries of a sequence number already seen
	Reordered  uint64  `json:"reordered"`  // deliveries below the highest sequence seen
	Unexpected uint64  `json:"unexpected"` // payloads not from this run or not for this subscriber
	Acked      uint64  `json:"acked,omitempty"`
	AckErrors  uint64  `json:"ack_errors,omitempty"` // v5 PUBACK reason >= 0x80
	Stalls     uint64  `json:"stalls,omitempty"`     // closed loop: windows forgiven after StallTimeout
	DrainedS   float64 `json:"drained_s"`            // time the drain took
	Complete   bool    `json:"complete"`             // every owed delivery arrived

	MeasuredSent      uint64  `json:"measured_sent"`
	MeasuredDelivered uint64  `json:"measured_delivered"`
	SentPerSec        float64 `json:"sent_per_s"`
	DeliveredPerSec   float64 `json:"delivered_per_s"`
	BacklogMax        int64   `json:"backlog_max,omitempty"` // open loop: most messages behind schedule
	BacklogEnd        int64   `json:"backlog_end,omitempty"` // open loop: behind schedule at the window's end

	Latency *LatencyResult `json:"latency,omitempty"`

	RSSBeforeKiB    int64   `json:"rss_before_kib,omitempty"`
	RSSAfterKiB     int64   `json:"rss_after_kib,omitempty"`
	RSSPerConnBytes float64 `json:"rss_per_conn_bytes,omitempty"`
	RSSPeakKiB      int64   `json:"rss_peak_kib,omitempty"` // slow: highest RSS sampled (every 100 ms) from setup to teardown
	ConnsOpened     int     `json:"conns_opened,omitempty"`
	ConnectFailures int     `json:"connect_failures,omitempty"`
	ConnectSeconds  float64 `json:"connect_s,omitempty"`
	ConnsPerSec     float64 `json:"conns_per_s,omitempty"`
	StormReceived   int     `json:"storm_received,omitempty"` // connstorm: subscribers that got the publish

	PerPublisher []PubResult `json:"per_publisher,omitempty"`
	Errors       []string    `json:"errors,omitempty"`
}

// LatencyResult holds latency percentiles in microseconds.
type LatencyResult struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min_us"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

// PubResult is one publisher's stream, summed over its subscribers.
type PubResult struct {
	ID         int    `json:"id"`
	Topic      string `json:"topic"`
	Sent       uint64 `json:"sent"`
	Fan        int    `json:"fan"`
	Delivered  uint64 `json:"delivered"`
	Lost       uint64 `json:"lost"`
	Duplicates uint64 `json:"duplicates"`
	Reordered  uint64 `json:"reordered"`
}

// maxPerPublisher bounds the per-publisher list in the JSON.
const maxPerPublisher = 100

// Run runs the scenario in cfg (after Defaults and Validate) and returns what
// it measured. It stops by itself: setup, the measured window, the drain and
// the teardown are each bounded, and ctx ends it early. A Result is returned
// with an error too when something was measured.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := cfg.parseURL()
	switch cfg.Scenario {
	case Idle:
		return runIdle(ctx, cfg, u)
	case ConnStorm:
		return runStorm(ctx, cfg, u)
	}
	return runPubSub(ctx, cfg, u)
}

func (r *Result) fill(cfg *Config, u *url.URL) {
	r.Scenario, r.URL, r.Transport = cfg.Scenario, cfg.URL, u.Scheme
	if cfg.Scenario != Idle {
		r.SubURLs = cfg.subURLs()
	}
	r.Version, r.QoS, r.Size = cfg.Version, cfg.QoS, cfg.Size
}

// Summary is a readable account of r, a few lines.
func (r *Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s over %s, MQTT v%d, QoS %d, %d B payload", r.Scenario, r.Transport, r.Version, r.QoS, r.Size)
	switch r.Scenario {
	case Idle, ConnStorm:
		fmt.Fprintf(&b, ", %d connections\n", r.Conns)
		r.summarizeSubURLs(&b)
		fmt.Fprintf(&b, "  opened %d (%d failed) in %.2fs: %.0f conn/s\n", r.ConnsOpened, r.ConnectFailures, r.ConnectSeconds, r.ConnsPerSec)
		if r.RSSAfterKiB > 0 {
			fmt.Fprintf(&b, "  broker RSS %d KiB -> %d KiB: %.0f B per connection\n", r.RSSBeforeKiB, r.RSSAfterKiB, r.RSSPerConnBytes)
		}
		if r.Scenario == ConnStorm {
			fmt.Fprintf(&b, "  one publish reached %d of %d subscribers in %.2fs\n", r.StormReceived, r.Expected, r.DrainedS)
		}
	default:
		fmt.Fprintf(&b, ", %d pub / %d sub, %s loop", r.Pubs, r.Subs, r.Mode)
		if r.Mode == "open" {
			fmt.Fprintf(&b, " at %.0f msg/s", r.Rate)
		} else {
			fmt.Fprintf(&b, ", window %d", r.Window)
			if r.Lead > 0 {
				fmt.Fprintf(&b, ", lead %d", r.Lead)
			}
		}
		b.WriteString("\n")
		r.summarizeSubURLs(&b)
		fmt.Fprintf(&b, "  measured %.2fs after %.2fs warm-up: sent %.0f msg/s, delivered %.0f msg/s\n",
			r.Duration, r.Warmup, r.SentPerSec, r.DeliveredPerSec)
		fmt.Fprintf(&b, "  whole run: sent %d, owed %d, delivered %d, lost %d, duplicates %d, reordered %d (drain %.2fs, complete %v)\n",
			r.Sent, r.Expected, r.Delivered, r.Lost, r.Duplicates, r.Reordered, r.DrainedS, r.Complete)
		if r.Stalls > 0 || r.BacklogMax > 0 || r.Unexpected > 0 || r.AckErrors > 0 {
			fmt.Fprintf(&b, "  stalls %d, backlog max %d end %d, unexpected %d, PUBACK errors %d\n",
				r.Stalls, r.BacklogMax, r.BacklogEnd, r.Unexpected, r.AckErrors)
		}
		if r.SlowSubs > 0 {
			fmt.Fprintf(&b, "  %d subscribers never read; broker RSS %d KiB before, peak %d KiB (+%d KiB)\n",
				r.SlowSubs, r.RSSBeforeKiB, r.RSSPeakKiB, r.RSSPeakKiB-r.RSSBeforeKiB)
		}
		if l := r.Latency; l != nil {
			fmt.Fprintf(&b, "  latency µs: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (mean %.1f, n=%d)\n",
				l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "  error: %s\n", e)
	}
	return b.String()
}

// summarizeSubURLs writes where subscribers connected when that is not
// (only) the publishers' URL.
func (r *Result) summarizeSubURLs(b *strings.Builder) {
	if len(r.SubURLs) > 1 || (len(r.SubURLs) == 1 && r.SubURLs[0] != r.URL) {
		fmt.Fprintf(b, "  subscribers round robin over %s\n", strings.Join(r.SubURLs, ", "))
	}
}

// Check reports what a strict run refuses: any error, a connection that
// failed, and, in closed loop and connstorm, any loss or duplicate.
func (r *Result) Check() error {
	var errs []error
	if len(r.Errors) > 0 {
		errs = append(errs, fmt.Errorf("%d errors, first: %s", len(r.Errors), r.Errors[0]))
	}
	if r.ConnectFailures > 0 {
		errs = append(errs, fmt.Errorf("%d connections failed", r.ConnectFailures))
	}
	if r.Mode == "closed" || r.Scenario == ConnStorm {
		if r.Lost > 0 || r.Duplicates > 0 || !r.Complete {
			errs = append(errs, fmt.Errorf("closed loop: %d lost, %d duplicates, complete %v", r.Lost, r.Duplicates, r.Complete))
		}
	}
	if r.Mode != "" && r.Sent == 0 {
		errs = append(errs, errors.New("nothing was sent"))
	}
	return errors.Join(errs...)
}
