// Package testutil starts whole servers (the root package's Server, with
// its listeners and store) for tests. The raw and paho clients, and a bare
// broker on a loopback listener, are brokertest's: packages the root
// package imports use those without an import cycle.
package testutil

import (
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/brokertest"
)

// StartBroker runs a broker on 127.0.0.1:0 with the default config changed
// by mutate (may be nil) and stops it when the test ends. It returns the
// MQTT TCP address.
func StartBroker(t testing.TB, mutate func(*starling.Config)) (*starling.Server, string) {
	t.Helper()
	cfg := starling.DefaultConfig()
	cfg.TCP = "127.0.0.1:0"
	cfg.HTTP = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.ShutdownTimeout = 2 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	lv := slog.LevelWarn
	if os.Getenv("STARLING_TEST_LOG") != "" {
		lv = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	srv, err := starling.New(cfg, starling.WithLogger(log))
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	addr := srv.Addr()
	if addr == nil {
		t.Fatalf("start broker: %v", <-errc)
	}
	t.Cleanup(func() {
		srv.Close()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv, addr.String()
}

// Patience is brokertest.Patience.
func Patience(t testing.TB) time.Duration { return brokertest.Patience(t) }

// Raw is brokertest.Raw, a packet-level MQTT client.
type Raw = brokertest.Raw

// Dial is brokertest.Dial.
func Dial(t testing.TB, addr string, version byte) *Raw { return brokertest.Dial(t, addr, version) }

// NewRaw is brokertest.NewRaw.
func NewRaw(t testing.TB, nc net.Conn, version byte) *Raw { return brokertest.NewRaw(t, nc, version) }

// Paho is brokertest.Paho, a paho.golang MQTT 5 client.
type Paho = brokertest.Paho

// DialPaho is brokertest.DialPaho.
func DialPaho(t testing.TB, addr, clientID string, cp *paho.Connect) (*Paho, *paho.Connack) {
	return brokertest.DialPaho(t, addr, clientID, cp)
}

// TryDialPaho is brokertest.TryDialPaho.
func TryDialPaho(t testing.TB, addr, clientID string, cp *paho.Connect) (*Paho, *paho.Connack, error) {
	return brokertest.TryDialPaho(t, addr, clientID, cp)
}

// DialPahoWith is brokertest.DialPahoWith.
func DialPahoWith(t testing.TB, addr, clientID string, handle func(*paho.Publish)) *Paho {
	return brokertest.DialPahoWith(t, addr, clientID, handle)
}
