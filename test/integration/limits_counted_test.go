package integration

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// limitCount reads mqtt_limits_exceeded_total for one limit.
func limitCount(t *testing.T, srv *starling.Server, limit string) float64 {
	t.Helper()
	return metric(t, srv, `mqtt_limits_exceeded_total{limit="`+limit+`"}`)
}

// waitMetric waits until the metric reaches want and returns its value.
func waitMetric(t *testing.T, srv *starling.Server, name string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := metric(t, srv, name)
		if v >= want || time.Now().After(deadline) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Each limit without a reason code of its own is counted in
// mqtt_limits_exceeded_total{limit=<config key>} when a real client goes
// over it, and only then.
func TestLimitsCounted(t *testing.T) {
	t.Parallel()
	t.Run("max_connections", func(t *testing.T) {
		t.Parallel()
		srv, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxConnections = 1 })
		dialV5(t, addr, "mc-1", nil)
		if n := limitCount(t, srv, "max_connections"); n != 0 {
			t.Fatalf("counted %v before the limit", n)
		}
		if c, ack := dialV5(t, addr, "mc-2", nil); c != nil || ack == nil || ack.ReasonCode != byte(packet.QuotaExceeded) {
			t.Fatalf("second client: %v %+v, want CONNACK 0x97", c != nil, ack)
		}
		if n := limitCount(t, srv, "max_connections"); n != 1 {
			t.Fatalf("max_connections counted %v, want 1", n)
		}
	})
	t.Run("connect_timeout", func(t *testing.T) {
		t.Parallel()
		srv, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.ConnectTimeout = 300 * time.Millisecond })
		dialV5(t, addr, "ct-ok", nil) // a CONNECT in time is not counted
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.Write([]byte{0x10}) // the start of a CONNECT, and nothing more
		waitClosed(t, nc, 5*time.Second)
		if n := waitMetric(t, srv, `mqtt_limits_exceeded_total{limit="connect_timeout"}`, 1); n != 1 {
			t.Fatalf("connect_timeout counted %v, want 1", n)
		}
	})
	t.Run("publish_rate_and_bytes", func(t *testing.T) {
		t.Parallel()
		srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
			c.Limits.PublishRate = 10          // a burst of 10, then 10/s
			c.Limits.PublishBytesRate = 10_000 // a burst of 10 kB, then 10 kB/s
		})
		c, _ := dialV5(t, addr, "pr", nil)
		start := time.Now()
		for range 5 { // within both
			c.pub(t, &paho.Publish{Topic: "pr/t", QoS: 1, Payload: []byte("x")})
		}
		if a, b := limitCount(t, srv, "publish_rate"), limitCount(t, srv, "publish_bytes_rate"); a != 0 || b != 0 {
			t.Fatalf("counted %v, %v within the rates", a, b)
		}
		// 15 more, all at once: they reach the broker together however
		// long a round trip takes (one at a time under -race on a busy
		// machine, the bucket refilled between them and none waited).
		// 20 from a full bucket of 10 at 10/s take at least 1 s, however
		// the refills fall; those that waited are counted: some of the
		// 15 found the bucket empty, at most 10 (it held 5 or more when
		// they came).
		var sent sync.WaitGroup
		errs := make(chan error, 15)
		for range 15 {
			sent.Add(1)
			go func() {
				defer sent.Done()
				ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
				defer cancel()
				if _, err := c.Publish(ctx, &paho.Publish{Topic: "pr/t", QoS: 1, Payload: []byte("x")}); err != nil {
					errs <- err
				}
			}()
		}
		sent.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("publish: %v", err)
		}
		if took := time.Since(start); took < 950*time.Millisecond {
			t.Fatalf("20 publishes against a burst of 10 at 10/s took %v: not slowed", took)
		}
		if n := limitCount(t, srv, "publish_rate"); n < 1 || n > 10 {
			t.Fatalf("publish_rate counted %v, want 1 to 10 (those over the burst)", n)
		}
		if n := limitCount(t, srv, "publish_bytes_rate"); n != 0 {
			t.Fatalf("publish_bytes_rate counted %v for 20 bytes", n)
		}
		// 3 payloads of 8 kB: 24 kB against 10 kB/s, the message rate
		// long refilled.
		time.Sleep(1100 * time.Millisecond) // refill both buckets (a wait, not an assertion)
		start = time.Now()
		big := bytes.Repeat([]byte("b"), 8000)
		for range 3 {
			c.pub(t, &paho.Publish{Topic: "pr/t", QoS: 1, Payload: big})
		}
		if took := time.Since(start); took < 1300*time.Millisecond {
			t.Fatalf("24 kB against a burst of 10 kB at 10 kB/s in %v, want at least 1.4 s", took)
		}
		if n := limitCount(t, srv, "publish_bytes_rate"); n < 1 || n > 2 {
			t.Fatalf("publish_bytes_rate counted %v, want 2 (the second and third payloads)", n)
		}
	})
	t.Run("subscriptions_and_topics", func(t *testing.T) {
		t.Parallel()
		srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
			c.Limits.MaxSubscriptionsPerClient = 1
			c.Limits.MaxTopicLength = 20
			c.Limits.MaxTopicLevels = 3
		})
		c, _ := dialV5(t, addr, "st", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: "a/b", QoS: 1}, {Topic: "c", QoS: 1}, {Topic: "a/b/c/d"}, {Topic: strings.Repeat("x", 21)}}})
		want := []byte{1, byte(packet.QuotaExceeded), byte(packet.TopicFilterInvalid), byte(packet.TopicFilterInvalid)}
		if sa == nil || !bytes.Equal(sa.Reasons, want) {
			t.Fatalf("SUBACK %+v, want %x", sa, want)
		}
		for _, tp := range []string{"l/l/l/l", strings.Repeat("y", 21)} {
			if r, _ := c.Publish(ctx, &paho.Publish{Topic: tp, QoS: 1, Payload: []byte("x")}); r == nil || r.ReasonCode != byte(packet.TopicNameInvalid) {
				t.Fatalf("publish to %s: %+v, want PUBACK 0x90", tp, r)
			}
		}
		// A will topic too deep is refused at CONNECT.
		if _, ack := v5RawConnect(t, addr, &packet.Connect{ClientID: "st-will", CleanStart: true,
			Will: &packet.Will{Topic: "w/w/w/w", Payload: []byte("x")}}); ack.ReasonCode != packet.TopicNameInvalid {
			t.Fatalf("will topic over max_topic_levels: CONNACK 0x%02x, want 0x90", byte(ack.ReasonCode))
		}
		for lim, want := range map[string]float64{"max_subscriptions_per_client": 1, "max_topic_levels": 3, "max_topic_length": 2} {
			if n := limitCount(t, srv, lim); n != want {
				t.Errorf("%s counted %v, want %v", lim, n, want)
			}
		}
	})
	t.Run("per_address", func(t *testing.T) {
		t.Parallel()
		// Loopback is not limited per address; a trusted PROXY header
		// gives each connection the address of a real client.
		srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
			c.ProxyProtocolListeners.TCP = []string{"127.0.0.1"}
			c.Limits.MaxConnectionsPerAddress = 1
			c.Limits.ConnectRatePerAddress = 0
		})
		testutil.NewRaw(t, dialProxied(t, addr, "198.51.100.20:4000"), packet.V5).Connect("pa-1", true)
		expectDropped(t, dialProxied(t, addr, "198.51.100.20:4001"))
		testutil.NewRaw(t, dialProxied(t, addr, "198.51.100.21:4000"), packet.V5).Connect("pa-2", true)
		if n := waitMetric(t, srv, `mqtt_limits_exceeded_total{limit="max_connections_per_address"}`, 1); n != 1 {
			t.Fatalf("max_connections_per_address counted %v, want 1", n)
		}
	})
	t.Run("connect_rate_per_address", func(t *testing.T) {
		t.Parallel()
		srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
			c.ProxyProtocolListeners.TCP = []string{"127.0.0.1"}
			c.Limits.ConnectRatePerAddress = 0.5 // a burst of 1, then one per 2 s
		})
		testutil.NewRaw(t, dialProxied(t, addr, "198.51.100.30:4000"), packet.V5).Connect("cr-1", true)
		expectDropped(t, dialProxied(t, addr, "198.51.100.30:4001"))
		expectDropped(t, dialProxied(t, addr, "198.51.100.30:4002"))
		// Another address is not held back.
		testutil.NewRaw(t, dialProxied(t, addr, "198.51.100.31:4000"), packet.V5).Connect("cr-2", true)
		if n := waitMetric(t, srv, `mqtt_limits_exceeded_total{limit="connect_rate_per_address"}`, 2); n != 2 {
			t.Fatalf("connect_rate_per_address counted %v, want 2", n)
		}
		if n := metric(t, srv, "mqtt_clients_refused_total"); n != 2 {
			t.Fatalf("mqtt_clients_refused_total %v, want 2", n)
		}
	})
}

// A CONNECT that finds no free password verification slot before the
// connect timeout gets 0x89 and is counted as server_busy, not other.
func TestVerificationSlotsCounted(t *testing.T) {
	t.Parallel()
	params := auth.DefaultArgon2
	params.Memory = 8 << 10 // KiB
	params.Time = 60        // each verification takes a while
	pw := alicePasswordFile(t, params)
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.ConnectTimeout = 150 * time.Millisecond
		c.Auth.AllowAnonymous = false
		c.Auth.PasswordFile = pw
		c.Auth.MaxConcurrentVerifications = 1
	})
	const n = 4
	codes := make(chan byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				codes <- 0xff
				return
			}
			defer nc.Close()
			cp, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true,
				ClientID: "busy-" + string(rune('a'+i)), Username: "alice", HasUsername: true, Password: []byte("wrong"), HasPassword: true}, packet.V5)
			nc.Write(cp)
			// The slot holder's verification is slow on purpose, and
			// slower still under -race on a busy machine (a fixed 20 s
			// was missed): the wait follows the test's deadline.
			nc.SetReadDeadline(time.Now().Add(testutil.Patience(t)))
			if ack, ok := (&rawReader{nc: nc}).next().(*packet.Connack); ok {
				codes <- byte(ack.ReasonCode)
			} else {
				codes <- 0xfe
			}
		}()
	}
	wg.Wait()
	close(codes)
	busy := 0
	for c := range codes {
		switch c {
		case byte(packet.ServerBusy):
			busy++
		case byte(packet.BadUsernameOrPassword):
		default:
			t.Fatalf("answer 0x%02x, want 0x86 or 0x89", c)
		}
	}
	if busy == 0 {
		t.Skip("every verification found a free slot (the machine hashed faster than the connect timeout)")
	}
	if got := metric(t, srv, `mqtt_auth_failures_total{reason="server_busy"}`); got != float64(busy) {
		t.Fatalf("server_busy counted %v, want %d", got, busy)
	}
	if got := metric(t, srv, `mqtt_auth_failures_total{reason="other"}`); got != 0 {
		t.Fatalf("other counted %v, want 0", got)
	}
}
