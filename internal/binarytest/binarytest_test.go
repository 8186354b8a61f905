package binarytest

import (
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/freeport"
)

var starlingBin string

func TestMain(m *testing.M) {
	Main(m, map[string]*string{"cmd/starling": &starlingBin})
}

// Start returns once the built broker listens; Kill and Stop end it and
// leave nothing listening.
func TestStartKillStop(t *testing.T) {
	for _, end := range []struct {
		name string
		stop func(*Proc)
	}{{"kill", (*Proc).Kill}, {"stop", (*Proc).Stop}} {
		t.Run(end.name, func(t *testing.T) {
			addr := freeport.Addr(t)
			p := Start(t, addr, nil, starlingBin, "-tcp", addr, "-http", "", "-data", t.TempDir(), "-log-level", "warn")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("not listening after Start: %v", err)
			}
			c.Close()
			end.stop(p)
			if p.Cmd.ProcessState == nil {
				t.Fatal("the process was not waited for")
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Fatalf("%s still listening after %s", addr, end.name)
			}
			end.stop(p) // a second time does nothing
		})
	}
}
