package integration

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// A flood of denied publishes and subscriptions and of refused CONNECTs
// writes at most auth.audit_lines_per_second lines per second (bursts of
// the same) between the ACL's audit lines and the broker's own, and every
// one not written is accounted for in "audit lines suppressed".
func TestAuditLogBounded(t *testing.T) {
	t.Parallel()
	acl := filepath.Join(t.TempDir(), "acl")
	writeFile(t, acl, "allow all any ok/#\n")
	const rate = 5
	srv, logs := startLoggedBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Auth.ACLFile = acl
		c.Auth.AuditLinesPerSecond = rate
	})
	addr := srv.Addr().String()

	start := time.Now()
	const pubs, subs, connects = 200, 100, 100
	for range connects {
		// 3.1.1 without a client ID must ask for a clean session.
		c := testutil.Dial(t, addr, packet.V311)
		c.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, KeepAlive: 30})
		if ack, ok := c.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.V3IdentifierRejected {
			t.Fatalf("CONNACK %+v, want return code 2", ack)
		}
		c.Close()
	}
	r := testutil.Dial(t, addr, packet.V5)
	r.Connect("flooder", true)
	for i := 1; i <= pubs; i++ {
		r.Send(&packet.Publish{Topic: "secret/" + strconv.Itoa(i), QoS: 1, PacketID: uint16(i), Payload: []byte("x")})
	}
	for i := 1; i <= pubs; i++ {
		if a, ok := r.Read().(*packet.Ack); !ok || a.ReasonCode != packet.NotAuthorized {
			t.Fatalf("publish %d: %+v, want PUBACK 0x87", i, a)
		}
	}
	for i := 1; i <= subs; i++ {
		r.Send(&packet.Subscribe{PacketID: uint16(i), Subscriptions: []packet.Subscription{{Filter: "secret/#"}}})
		if sa, ok := r.Read().(*packet.Suback); !ok || sa.ReasonCodes[0] != packet.NotAuthorized {
			t.Fatalf("subscribe %d: %+v, want SUBACK 0x87", i, sa)
		}
	}
	elapsed := time.Since(start)

	audited := regexp.MustCompile(`msg="(access denied|connect refused|publish denied|subscribe denied)"`)
	suppressed := regexp.MustCompile(`msg="audit lines suppressed" count=(\d+)`)
	const events = pubs + subs + connects
	var lines, dropped int
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines, dropped = 0, 0
		for l := range strings.Lines(logs.String()) {
			if audited.MatchString(l) {
				lines++
			}
			if m := suppressed.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				dropped += n
			}
		}
		// The last suppressed lines are summed up a second later.
		if lines+dropped >= events || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d denials and refusals in %v: %d lines written, %d suppressed", events, elapsed, lines, dropped)
	if max := rate + int(float64(rate)*elapsed.Seconds()) + 1; lines > max {
		t.Fatalf("%d audit lines for %d events in %v, want at most %d", lines, events, elapsed, max)
	}
	if lines+dropped != events {
		t.Fatalf("%d lines written + %d suppressed, want the %d events", lines, dropped, events)
	}
	// The refusals came first: their lines are the broker's own.
	if !strings.Contains(logs.String(), `msg="connect refused" client_id="" username="" remote=127.0.0.1:`) {
		t.Fatalf("no connect refused line:\n%s", logs.String())
	}
}
