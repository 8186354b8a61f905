package integration

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// A login storm beyond the verification slots and
// auth.max_pending_verifications is refused at once (MQTT 5: CONNACK
// 0x89; 3.1.1: return code 3), not parked for the connect timeout: every
// CONNECT is answered well before it, and every answer is either a
// verified refusal or server busy.
func TestHostileLoginQueueBounded(t *testing.T) {
	t.Parallel()
	params := auth.DefaultArgon2
	params.Memory, params.Time = 8<<10, 4 // tens of ms per verification
	pw := alicePasswordFile(t, params)
	const connectTimeout = time.Minute
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.ConnectTimeout = connectTimeout
		c.Auth.AllowAnonymous = false
		c.Auth.PasswordFile = pw
		c.Auth.MaxConcurrentVerifications = 1
		c.Auth.MaxPendingVerifications = 2
	})
	const storm = 40
	type answer struct {
		version byte
		code    packet.ReasonCode
		took    time.Duration
	}
	answers := make(chan answer, storm)
	var wg sync.WaitGroup
	for i := range storm {
		version := packet.V5
		if i%2 == 1 {
			version = packet.V311
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := testutil.Dial(t, addr, version)
			start := time.Now()
			c.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: version, CleanStart: true, KeepAlive: 30,
				ClientID: fmt.Sprintf("guess-%d", i), Username: "alice", HasUsername: true, Password: []byte("wrong"), HasPassword: true})
			p, err := c.Next(2 * connectTimeout)
			ack, ok := p.(*packet.Connack)
			if err != nil || !ok {
				t.Errorf("guess %d: %v %v, want a CONNACK", i, p, err)
				return
			}
			answers <- answer{version, ack.ReasonCode, time.Since(start)}
		}()
	}
	wg.Wait()
	close(answers)
	busy := map[byte]int{}
	for a := range answers {
		switch {
		case a.version == packet.V5 && a.code == packet.ServerBusy, a.version == packet.V311 && a.code == packet.V3ServerUnavailable:
			busy[a.version]++
			if a.took >= connectTimeout {
				t.Errorf("server busy after %v: parked for the connect timeout", a.took)
			}
		case a.version == packet.V5 && a.code == packet.BadUsernameOrPassword, a.version == packet.V311 && a.code == packet.V3BadUsernameOrPassword:
		default:
			t.Errorf("v%d: CONNACK 0x%02x", a.version, byte(a.code))
		}
	}
	t.Logf("%d CONNECTs, 1 verification slot, 2 waiting: refused as busy %d (v5) and %d (3.1.1)", storm, busy[packet.V5], busy[packet.V311])
	if busy[packet.V5] == 0 || busy[packet.V311] == 0 {
		t.Fatalf("no CONNECT refused as busy (v5 %d, 3.1.1 %d) although %d arrived at once", busy[packet.V5], busy[packet.V311], storm)
	}
}
