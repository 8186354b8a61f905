package broker

import (
	"sync"
	"testing"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// stayBackplane records the stay markers a broker asks for.
type stayBackplane struct {
	mu     sync.Mutex
	stayed []string
}

func (p *stayBackplane) Forward(*session.Message) (bool, <-chan struct{}) { return false, nil }
func (p *stayBackplane) Interest(string, string, bool)                    {}
func (p *stayBackplane) Retain(*session.Message)                          {}
func (p *stayBackplane) Claim(string, bool) (*SessionSnapshot, error)     { return nil, nil }
func (p *stayBackplane) SessionChanged(*SessionSnapshot)                  {}
func (p *stayBackplane) SessionEnded(string)                              {}
func (p *stayBackplane) StartStay(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stayed = append(p.stayed, id)
}

func (p *stayBackplane) markers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stayed...)
}

// A connect that attach would refuse writes no stay marker: a takeover
// replays a session's queue entries from its last marker, so a marker
// for a connection that never started would hide what a surviving
// session of the same client had queued.
func TestRefusedConnectWritesNoStayMarker(t *testing.T) {
	lim := config.Default().Limits
	lim.MaxConnections = 1
	b := New(lim, nil)
	bp := &stayBackplane{}
	l := servedBroker(t, b, memory.New(), bp)

	first := dialRaw(t, l.addr, packet.V5)
	first.connect("first", true, 60)
	if got := bp.markers(); len(got) != 1 || got[0] != "first" {
		t.Fatalf("stay markers %v, want [first]", got)
	}

	second := dialRaw(t, l.addr, packet.V5)
	expiry := uint32(60)
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "second", KeepAlive: 60}
	cp.Properties.SessionExpiry = &expiry
	second.mustSend(cp)
	if ack, ok := second.read().(*packet.Connack); !ok || ack.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("second connect: %+v, want CONNACK 0x97 (quota exceeded)", ack)
	}
	if got := bp.markers(); len(got) != 1 {
		t.Fatalf("stay markers %v after a refused connect, want [first] alone", got)
	}
}
