package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// urls starts a broker and returns its tcp:// and ws:// URLs. Its ws
// listener accepts permessage-deflate from clients that offer it.
func urls(t *testing.T) (tcp, ws string) {
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) { c.WebSocket.Compression = true })
	return "tcp://" + addr, "ws://" + srv.HTTPAddr().String() + "/mqtt"
}

// runJSON runs cfg and round-trips the result through JSON, as the command
// prints it.
func runJSON(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("run %s: %v", cfg.Scenario, err)
	}
	line, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(line), "\n") {
		t.Fatal("JSON result spans lines")
	}
	var back Result
	if err := json.Unmarshal(line, &back); err != nil {
		t.Fatalf("JSON result does not parse: %v", err)
	}
	t.Logf("%s", back.Summary())
	return &back
}

// checkClosedLoop asserts what every closed-loop run must show.
func checkClosedLoop(t *testing.T, r *Result) {
	t.Helper()
	if err := r.Check(); err != nil {
		t.Errorf("check: %v", err)
	}
	if r.Sent == 0 || r.MeasuredDelivered == 0 || r.DeliveredPerSec <= 0 {
		t.Errorf("nothing measured: sent %d, measured delivered %d", r.Sent, r.MeasuredDelivered)
	}
	if r.Delivered != r.Expected || r.Lost != 0 || r.Duplicates != 0 || r.Reordered != 0 || r.Unexpected != 0 {
		t.Errorf("counts: expected %d delivered %d lost %d dup %d reordered %d unexpected %d",
			r.Expected, r.Delivered, r.Lost, r.Duplicates, r.Reordered, r.Unexpected)
	}
	var sent, delivered, fanSent uint64
	for _, p := range r.PerPublisher {
		sent += p.Sent
		delivered += p.Delivered
		fanSent += p.Sent * uint64(p.Fan)
		if p.Lost != 0 || p.Duplicates != 0 {
			t.Errorf("publisher %d: lost %d dup %d", p.ID, p.Lost, p.Duplicates)
		}
	}
	if sent != r.Sent || delivered != r.Delivered || fanSent != r.Expected {
		t.Errorf("per-publisher sums %d/%d/%d differ from totals %d/%d/%d", sent, delivered, fanSent, r.Sent, r.Delivered, r.Expected)
	}
	if r.QoS > 0 && r.Acked != r.Sent {
		t.Errorf("acked %d of %d", r.Acked, r.Sent)
	}
	checkLatency(t, r)
}

func checkLatency(t *testing.T, r *Result) {
	t.Helper()
	l := r.Latency
	if l == nil || l.Count == 0 {
		t.Fatal("no latency recorded")
	}
	if !(l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) || l.Min < 0 {
		t.Errorf("latency percentiles out of order: %+v", *l)
	}
}

func TestScenarios(t *testing.T) {
	tcp, ws := urls(t)
	base := Config{Duration: time.Second, Warmup: 200 * time.Millisecond}
	for _, tc := range []struct {
		name string
		cfg  Config
		fan  int // subscribers per publisher
	}{
		{"fanin/tcp/v4/qos0", Config{URL: tcp, Scenario: FanIn}, 1},
		{"fanin/ws/v5/qos1", Config{URL: ws, Scenario: FanIn, Version: packet.V5, QoS: 1}, 1},
		{"fanout10/tcp/v5/qos1", Config{URL: tcp, Scenario: FanOut, Subs: 10, Version: packet.V5, QoS: 1}, 10},
		{"fanout10/ws/v4/qos0", Config{URL: ws, Scenario: FanOut, Subs: 10}, 10},
		{"pairs5/tcp/v4/qos1", Config{URL: tcp, Scenario: Pairs, Pubs: 5, QoS: 1}, 1},
		{"pairs5/ws/v5/qos0", Config{URL: ws, Scenario: Pairs, Pubs: 5, Version: packet.V5}, 1},
		{"fanout10/ws-deflate/v4/qos1", Config{URL: ws, Scenario: FanOut, Subs: 10, QoS: 1, WSDeflate: true, Size: 512}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Duration, cfg.Warmup = base.Duration, base.Warmup
			r := runJSON(t, cfg)
			checkClosedLoop(t, r)
			for _, p := range r.PerPublisher {
				if p.Fan != tc.fan {
					t.Errorf("publisher %d fan %d, want %d", p.ID, p.Fan, tc.fan)
				}
			}
			if r.Mode != "closed" || r.Window != 64 {
				t.Errorf("mode %q window %d", r.Mode, r.Window)
			}
			if r.Duration < 1 || r.Duration > 3 {
				t.Errorf("measured window %.2fs, want about 1s", r.Duration)
			}
		})
	}
}

func TestLatencyOpenLoop(t *testing.T) {
	tcp, ws := urls(t)
	for _, u := range []string{tcp, ws} {
		r := runJSON(t, Config{URL: u, Scenario: Latency, Rate: 2000, Duration: time.Second, QoS: 1})
		if r.Mode != "open" || r.Rate != 2000 {
			t.Errorf("mode %q rate %v", r.Mode, r.Rate)
		}
		// The rate is held: about 2000 sent in the second.
		if r.MeasuredSent < 1500 || r.MeasuredSent > 2500 {
			t.Errorf("sent %d in the window at 2000/s", r.MeasuredSent)
		}
		if r.Lost != 0 || r.Duplicates != 0 || !r.Complete {
			t.Errorf("lost %d dup %d complete %v", r.Lost, r.Duplicates, r.Complete)
		}
		checkLatency(t, r)
	}
}

func TestIdleAndStorm(t *testing.T) {
	tcp, ws := urls(t)
	for _, u := range []string{tcp, ws} {
		// The broker runs in this process: its RSS is ours.
		r := runJSON(t, Config{URL: u, Scenario: Idle, Conns: 50, BrokerPID: os.Getpid(), Settle: 100 * time.Millisecond})
		if r.ConnsOpened != 50 || r.ConnectFailures != 0 || r.ConnsPerSec <= 0 {
			t.Errorf("idle: opened %d, failed %d, %v/s", r.ConnsOpened, r.ConnectFailures, r.ConnsPerSec)
		}
		if r.RSSBeforeKiB <= 0 || r.RSSAfterKiB <= 0 {
			t.Errorf("idle: RSS %d -> %d KiB", r.RSSBeforeKiB, r.RSSAfterKiB)
		}
		r = runJSON(t, Config{URL: u, Scenario: ConnStorm, Conns: 50, QoS: 1})
		if r.ConnsOpened != 50 || r.StormReceived != 50 || r.Lost != 0 || !r.Complete {
			t.Errorf("connstorm: opened %d, received %d, lost %d", r.ConnsOpened, r.StormReceived, r.Lost)
		}
		if err := r.Check(); err != nil {
			t.Errorf("connstorm: %v", err)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Scenario: "nope"}, "unknown scenario"},
		{Config{Scenario: FanIn, URL: "tcp://10.1.2.3:1883"}, "not a loopback"},
		{Config{Scenario: FanIn, URL: "tcp://example.com:1883"}, "not a loopback"},
		{Config{Scenario: FanIn, URL: "http://127.0.0.1:1883"}, "scheme"},
		{Config{Scenario: FanIn, URL: "tcp://127.0.0.1"}, "host:port"},
		{Config{Scenario: FanIn, Size: 8}, "size"},
		{Config{Scenario: FanIn, QoS: 2}, "qos"},
		{Config{Scenario: FanIn, Version: 3}, "version"},
		{Config{Scenario: Idle, Conns: MaxConns + 1}, "pubs+subs+conns"},
		{Config{Scenario: FanIn, Duration: time.Hour}, "duration"},
	} {
		c := tc.cfg
		c.Defaults()
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
	}
	ok := []Config{
		{Scenario: FanIn, URL: "tcp://localhost:1883"},
		{Scenario: FanIn, URL: "ws://[::1]:8080"},
		{Scenario: FanIn, URL: "tcp://10.1.2.3:1883", AllowRemote: true},
	}
	for _, c := range ok {
		c.Defaults()
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", c.URL, err)
		}
	}
	c := Config{Scenario: FanIn, URL: "ws://127.0.0.1:8080"}
	if u, _ := c.parseURL(); u.Path != "/mqtt" {
		t.Errorf("ws path %q, want /mqtt", u.Path)
	}
}

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		sc         string
		pubs, subs int
	}{{FanIn, 8, 1}, {FanOut, 1, 100}, {Pairs, 100, 100}, {Latency, 1, 1}} {
		c := Config{Scenario: tc.sc}
		c.Defaults()
		if c.Pubs != tc.pubs || c.Subs != tc.subs {
			t.Errorf("%s: %d pubs %d subs, want %d %d", tc.sc, c.Pubs, c.Subs, tc.pubs, tc.subs)
		}
	}
	c := Config{Scenario: Latency}
	c.Defaults()
	if c.Rate != 10000 {
		t.Errorf("latency rate %v", c.Rate)
	}
}

func TestStream(t *testing.T) {
	var s stream
	for _, seq := range []uint64{0, 1, 2, 5, 3, 3, 4, 6, 6, 1} {
		s.add(seq)
	}
	// 0..6 once each; 3 and 4 came after 5 (reordered); 3, 6 and 1 again.
	if s.unique != 7 || s.dup != 3 || s.reord != 2 || s.next != 7 {
		t.Errorf("unique %d dup %d reordered %d next %d", s.unique, s.dup, s.reord, s.next)
	}
	// A jump clears the bits it skips over, so a late arrival a window
	// later is a first delivery, not a duplicate.
	s.add(streamWindow + 2)
	if !s.add(streamWindow + 1) {
		t.Error("late first delivery taken for a duplicate")
	}
	if s.add(streamWindow + 2) {
		t.Error("duplicate taken for a first delivery")
	}
}

func TestHist(t *testing.T) {
	var h Hist
	for v := int64(1); v <= 100000; v++ {
		h.Record(v * 1000) // 1 µs .. 100 ms
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := q * 100000 * 1000
		got := float64(h.Quantile(q))
		if got < want || got > want*1.01 {
			t.Errorf("q%v: %v, want %v within 1%%", q, got, want)
		}
	}
	if h.Max() != 100000*1000 || h.Min() != 1000 || h.Count() != 100000 {
		t.Errorf("max %d min %d count %d", h.Max(), h.Min(), h.Count())
	}
	for i := range histIndex(1<<63-1) + 1 { // buckets an int64 can reach
		if v := histValue(i); histIndex(uint64(v)) != i {
			t.Fatalf("bucket %d: top value %d maps to %d", i, v, histIndex(uint64(v)))
		}
	}
	if histIndex(1<<63) >= histBuckets || histIndex(^uint64(0)) != histBuckets-1 {
		t.Error("index out of range")
	}
}

func TestParsePublish(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		for _, qos := range []byte{0, 1} {
			p := &packet.Publish{QoS: qos, Topic: "a/b", Payload: []byte("hello")}
			if qos > 0 {
				p.PacketID = 7
			}
			if v == packet.V5 {
				p.Properties.UserProperties = []packet.UserProperty{{Key: "k", Value: "v"}}
			}
			b, err := packet.Append(nil, p, v)
			if err != nil {
				t.Fatal(err)
			}
			hl := 2 // one-byte remaining length
			payload, id, err := parsePublish(b[hl:], b[0]&0x0f, v == packet.V5)
			if err != nil || string(payload) != "hello" || id != p.PacketID {
				t.Errorf("v%d qos%d: %q %d %v", v, qos, payload, id, err)
			}
			if _, _, err := parsePublish(b[hl:hl+3], b[0]&0x0f, v == packet.V5); err == nil && qos > 0 {
				t.Errorf("v%d qos%d: short body accepted", v, qos)
			}
		}
	}
}

func TestSubURLs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,", nil},
		{"tcp://127.0.0.1:1", []string{"tcp://127.0.0.1:1"}},
		{"tcp://127.0.0.1:1, ws://[::1]:2/mqtt ,,tcp://localhost:3", []string{"tcp://127.0.0.1:1", "ws://[::1]:2/mqtt", "tcp://localhost:3"}},
	} {
		if got := SplitURLs(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("SplitURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}

	// Round robin over SubURLs; URL when there are none.
	c := Config{Scenario: FanOut, URL: "tcp://127.0.0.1:1", SubURLs: []string{"tcp://127.0.0.1:2", "tcp://127.0.0.1:3"}}
	c.Defaults()
	var got []string
	for i := range 5 {
		got = append(got, c.SubURL(i))
	}
	if want := []string{"tcp://127.0.0.1:2", "tcp://127.0.0.1:3", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3", "tcp://127.0.0.1:2"}; !slices.Equal(got, want) {
		t.Errorf("round robin %q, want %q", got, want)
	}
	ds, err := c.subDialers(&dialer{version: c.Version, rbuf: 512})
	if err != nil || len(ds) != 2 || ds[0].u.Host != "127.0.0.1:2" || ds[1].u.Host != "127.0.0.1:3" || ds[1].rbuf != 512 {
		t.Errorf("dialers %v, %v", ds, err)
	}
	c.SubURLs = nil
	if c.SubURL(7) != c.URL {
		t.Errorf("no SubURLs: %q, want the URL", c.SubURL(7))
	}

	// Every URL is held to the loopback and scheme rules.
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Scenario: FanOut, SubURLs: []string{"tcp://127.0.0.1:2", "tcp://10.1.2.3:1883"}}, "subscriber url \"tcp://10.1.2.3:1883\": host is not a loopback"},
		{Config{Scenario: FanOut, SubURLs: []string{"http://127.0.0.1:2"}}, "scheme"},
		{Config{Scenario: FanOut, SubURLs: []string{"tcp://127.0.0.1"}}, "host:port"},
		{Config{Scenario: Idle, SubURLs: []string{"tcp://127.0.0.1:2"}}, "no subscribers"},
		{Config{Scenario: FanOut, SubURLs: make([]string, MaxSubURLs+1)}, "subscriber URLs"},
	} {
		c := tc.cfg
		c.Defaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.cfg.SubURLs, err, tc.want)
		}
	}
	c = Config{Scenario: FanOut, URL: "tcp://10.1.2.3:1", SubURLs: []string{"tcp://10.1.2.4:1"}, AllowRemote: true}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Errorf("-allow-remote: %v", err)
	}
}

// TestSubURLsRun spreads subscribers over the broker's tcp and ws listeners
// (one broker, so every message reaches all of them).
func TestSubURLsRun(t *testing.T) {
	tcp, ws := urls(t)
	r := runJSON(t, Config{URL: tcp, SubURLs: []string{ws, tcp}, Scenario: FanOut, Subs: 5, QoS: 1,
		Duration: 500 * time.Millisecond})
	checkClosedLoop(t, r)
	if r.URL != tcp || !slices.Equal(r.SubURLs, []string{ws, tcp}) || r.Transport != "tcp" {
		t.Errorf("url %q sub_urls %q transport %q", r.URL, r.SubURLs, r.Transport)
	}
	if !strings.Contains(r.Summary(), "round robin over "+ws+", "+tcp) {
		t.Errorf("summary does not say where subscribers are:\n%s", r.Summary())
	}
	r = runJSON(t, Config{URL: ws, SubURLs: []string{tcp, ws}, Scenario: ConnStorm, Conns: 20})
	if r.StormReceived != 20 || !r.Complete || !slices.Equal(r.SubURLs, []string{tcp, ws}) {
		t.Errorf("connstorm: received %d of 20, sub_urls %q", r.StormReceived, r.SubURLs)
	}
	// Without SubURLs the JSON names the URL.
	r = runJSON(t, Config{URL: tcp, Scenario: FanOut, Subs: 2, Duration: 200 * time.Millisecond})
	if !slices.Equal(r.SubURLs, []string{tcp}) || strings.Contains(r.Summary(), "round robin") {
		t.Errorf("sub_urls %q", r.SubURLs)
	}
}

// The slow scenario: a subscriber that never reads sits beside the fan-in's
// subscriber. The broker holds the publishers back for it until its
// slow-consumer timeout, then disconnects it; the other subscriber gets
// every message (closed loop, no loss) and the broker's RSS is sampled
// from setup to teardown.
func TestSlowConsumer(t *testing.T) {
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.SlowConsumer.Timeout = 200 * time.Millisecond // within the warm-up
	})
	ws := "ws://" + srv.HTTPAddr().String() + "/mqtt"
	metrics := "http://" + srv.HTTPAddr().String() + "/metrics"
	for _, tc := range []struct {
		url string
		qos byte
	}{{"tcp://" + addr, 0}, {"tcp://" + addr, 1}, {ws, 1}} {
		// The slow subscriber holds the publishers back only once its
		// socket and queue are full: a loaded machine publishes less in
		// a second, so the run is repeated, twice as long each time,
		// until the broker's slow-consumer policy has acted on it.
		var r *Result
		for d := time.Second; ; d *= 2 {
			before := slowActions(t, metrics)
			r = runJSON(t, Config{URL: tc.url, Scenario: Slow, QoS: tc.qos, Size: 1024,
				Duration: d, Warmup: time.Second, BrokerPID: os.Getpid()})
			if slowActions(t, metrics) > before {
				break
			}
			if d >= 8*time.Second {
				t.Fatalf("%s QoS %d: sent %d in %v and the slow subscriber never met the slow-consumer policy", tc.url, tc.qos, r.Sent, d)
			}
			t.Logf("sent %d in %v, no slow-consumer action yet: again, longer", r.Sent, d)
		}
		checkClosedLoop(t, r)
		if r.Pubs != 8 || r.Subs != 1 || r.SlowSubs != 1 {
			t.Errorf("pubs %d subs %d slow %d, want 8 1 1", r.Pubs, r.Subs, r.SlowSubs)
		}
		if r.RSSBeforeKiB <= 0 || r.RSSPeakKiB < r.RSSBeforeKiB {
			t.Errorf("RSS before %d KiB, peak %d KiB", r.RSSBeforeKiB, r.RSSPeakKiB)
		}
		// The broker let go of the slow subscriber (its policy acted,
		// above) rather than hold the publishers for good: they went on
		// publishing in the measured window, which follows the warm-up
		// that holds the policy's 200 ms timeout, and the fast
		// subscriber got everything (checkClosedLoop).
		if r.MeasuredSent == 0 {
			t.Errorf("sent %d, none in the measured window: the slow subscriber held the publishers back", r.Sent)
		}
	}
	var cfg Config
	cfg.Scenario, cfg.SlowSubs = FanIn, 1
	cfg.Defaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "slow subscribers") {
		t.Errorf("slow subscribers outside the slow scenario: %v", err)
	}
}

// slowActions reads the broker's slow-consumer policy actions, all kinds,
// from its /metrics.
func slowActions(t *testing.T, url string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	var sum float64
	for line := range strings.Lines(string(body)) {
		if rest, ok := strings.CutPrefix(line, "mqtt_flow_slow_consumer_actions_total{"); ok {
			_, v, _ := strings.Cut(rest, "} ")
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metrics: %q: %v", line, err)
			}
			sum += f
		}
	}
	return sum
}

// Persistent subscribers leave their sessions on the broker.
func TestPersistentSubscribers(t *testing.T) {
	tcp, _ := urls(t)
	addr := strings.TrimPrefix(tcp, "tcp://")
	for _, v := range []byte{packet.V311, packet.V5} {
		id := fmt.Sprintf("keep%d", v)
		r := runJSON(t, Config{URL: tcp, Scenario: FanOut, Subs: 2, QoS: 1, Version: v, Persistent: true, ClientID: id,
			Duration: 200 * time.Millisecond})
		checkClosedLoop(t, r)
		c := testutil.Dial(t, addr, packet.V311)
		if ack := c.Connect(id+"-s0", false); !ack.SessionPresent {
			t.Errorf("version %d: no session left for %s-s0", v, id)
		}
		c.Close()
	}
}
