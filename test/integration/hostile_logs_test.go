package integration

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// fastArgon2 keeps password checks cheap where their cost is not the point.
var fastArgon2 = auth.Argon2Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

// waitFor polls cond until it holds or the test's own deadline is near.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	if d, ok := t.Deadline(); ok && time.Until(d) < 2*time.Minute {
		deadline = d.Add(-10 * time.Second)
	}
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A flood of CONNECTs with 65,535-byte client IDs, and of refused logins
// with 65,535-byte user names, writes short lines (client-supplied fields
// cut to limit.MaxLogField bytes plus a hash) and at most
// limits.connection_log_lines_per_second connection lines per second,
// every suppressed one counted in "connection lines suppressed".
func TestHostileLogAmplification(t *testing.T) {
	t.Parallel()
	pw := alicePasswordFile(t, fastArgon2)
	const connRate, auditRate = 10, 5
	srv, logs := startLoggedBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.ConnectRatePerAddress = 0
		c.Limits.ConnectionLogLines = connRate
		c.Auth.AuditLinesPerSecond = auditRate
		c.Auth.PasswordFile = pw
		c.Auth.AllowAnonymous = true
	})
	addr := srv.Addr().String()

	const accepted, refused = 150, 50
	long := strings.Repeat("x", 65535-8)
	sent := 0
	start := time.Now()
	for i := range accepted {
		c := testutil.Dial(t, addr, packet.V5)
		id := strconv.Itoa(10000000 + i)[:8] + long
		if ack := c.Connect(id, true); ack.ReasonCode != packet.Success {
			t.Fatalf("connect %d: %+v", i, ack)
		}
		sent += len(id)
		c.Close()
	}
	for i := range refused {
		c := testutil.Dial(t, addr, packet.V5)
		user := strconv.Itoa(10000000 + i)[:8] + long
		c.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, KeepAlive: 30,
			ClientID: "r" + user[:8], Username: user, HasUsername: true, Password: []byte("guess"), HasPassword: true})
		if ack, ok := c.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.BadUsernameOrPassword {
			t.Fatalf("refused login %d: %+v, want CONNACK 0x86", i, ack)
		}
		sent += len(user)
		c.Close()
	}

	connLine := regexp.MustCompile(`msg="client (connected|disconnected)"`)
	suppressed := regexp.MustCompile(`msg="connection lines suppressed" count=(\d+)(?: connected=(\d+))?(?: disconnected=(\d+))?`)
	var lines, dropped int
	waitFor(t, "every connection line written or counted", func() bool {
		lines, dropped = 0, 0
		for l := range strings.Lines(logs.String()) {
			if connLine.MatchString(l) {
				lines++
			}
			if m := suppressed.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				c, _ := strconv.Atoi(m[2])
				d, _ := strconv.Atoi(m[3])
				if c+d != n {
					t.Fatalf("summary by kind does not add up: %s", l)
				}
				dropped += n
			}
		}
		return lines+dropped >= 2*accepted
	})
	elapsed := time.Since(start)
	out := logs.String()
	t.Logf("%d bytes of client IDs and user names sent in %v; %d bytes of log; %d connection lines, %d suppressed",
		sent, elapsed, len(out), lines, dropped)
	if lines+dropped != 2*accepted {
		t.Fatalf("%d connection lines + %d suppressed, want %d", lines, dropped, 2*accepted)
	}
	if max := connRate + int(connRate*elapsed.Seconds()) + 1; lines > max {
		t.Fatalf("%d connection lines in %v, want at most %d", lines, elapsed, max)
	}
	const maxLine = 1024
	for l := range strings.Lines(out) {
		if len(l) > maxLine {
			t.Fatalf("a log line of %d bytes, want at most %d: %.300s", len(l), maxLine, l)
		}
	}
	if !strings.Contains(out, `client_id="10000000xxx`) || !strings.Contains(out, "(65535 bytes, sha256:") {
		t.Fatalf("no cut client ID with its length and hash in the log:\n%.2000s", out)
	}
	if !regexp.MustCompile(`msg="login failed" client_id=\S+ username="1000000\dx+…\(65535 bytes, sha256:[0-9a-f]{12}\)"`).MatchString(out) {
		t.Fatalf("no login failed line with a cut user name:\n%.2000s", out)
	}
	// Lines are bounded in number and size, so the log is a small fraction
	// of what was sent whatever the flood's length.
	if len(out) > sent/100 {
		t.Fatalf("%d bytes of log for %d bytes sent, want at most 1%%", len(out), sent)
	}
}
