package cluster_test

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// A node whose cluster port is taken ends its start with an error naming
// the port, as one whose MQTT port is taken does, rather than serving
// clients as a node that never becomes ready.
func TestClusterPortTakenEndsStart(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := starling.DefaultConfig()
	cfg.TCP, cfg.HTTP, cfg.Data = "127.0.0.1:0", "", t.TempDir()
	cfg.Cluster.Name, cfg.Cluster.Node = "taken", "n1"
	cfg.Cluster.Listen = taken.Addr().String()
	cfg.Cluster.Peers = freeport.Addrs(t, "127.0.0.1", 2)
	srv, err := starling.New(cfg, starling.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	defer srv.Close()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), cfg.Cluster.Listen) || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("Serve: %v; want an error naming %s as taken", err, cfg.Cluster.Listen)
		}
	case <-time.After(testutil.Patience(t)):
		t.Fatalf("Serve still running %v after its cluster port was found taken", testutil.Patience(t))
	}
	if a := srv.Addr(); a != nil {
		if c, err := net.DialTimeout("tcp", a.String(), time.Second); err == nil {
			c.Close()
			t.Fatalf("MQTT listener %s still accepting after a failed start", a)
		}
	}
}
