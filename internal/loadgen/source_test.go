package loadgen

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestSourcesSpreadLoopbackDials(t *testing.T) {
	if s := newSources("127.0.0.1", connsPerSource); s != nil {
		t.Errorf("%d connections: %d source addresses, want the kernel's choice", connsPerSource, len(s.addrs))
	}
	if s := newSources("::1", 3*connsPerSource); s != nil {
		t.Errorf("IPv6 target: %d source addresses, want the kernel's choice", len(s.addrs))
	}
	if s := newSources("192.0.2.1", 3*connsPerSource); s != nil {
		t.Errorf("non-loopback target: %d source addresses, want the kernel's choice", len(s.addrs))
	}
	s := newSources("127.0.0.1", 2*connsPerSource+1)
	if s == nil || len(s.addrs) != 3 {
		t.Fatalf("%d connections: sources %v, want 3", 2*connsPerSource+1, s)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for range 6 {
		c, err := s.dial(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		seen[a.RemoteAddr().(*net.TCPAddr).IP.String()] = true
		a.Close()
		c.Close()
	}
	for _, want := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		if !seen[want] {
			t.Errorf("no connection from %s; seen %v", want, seen)
		}
	}
}
