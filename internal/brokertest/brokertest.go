// Package brokertest serves a bare broker (internal/broker, no listeners
// of its own, no store unless given one) on a loopback listener for tests,
// and dials it with a raw packet client or a paho.golang client. It is a
// leaf: it imports internal/broker but not the root package, so the
// packages that the root package imports (admin, metrics, cluster) use it
// instead of copying it. Whole servers are testutil's.
package brokertest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
)

// Start builds a broker with the given limits and serves it until the
// test ends; it returns the broker and the listener's address.
func Start(t testing.TB, lim config.Limits) (*broker.Broker, string) {
	t.Helper()
	b := broker.New(lim, nil)
	return b, Serve(t, b)
}

// Serve accepts connections on 127.0.0.1 for b until the test ends, then
// closes the listener and the broker (waiting for its connections), and
// returns the listener's address.
func Serve(t testing.TB, b *broker.Broker) string {
	t.Helper()
	return serve(t, b, b.HandleConn)
}

// ServeOn is Serve with the connections counted under a listener's name
// (Broker.HandleConnOn), as the binary's listeners count theirs.
func ServeOn(t testing.TB, b *broker.Broker, listener string) string {
	t.Helper()
	return serve(t, b, func(c net.Conn) { b.HandleConnOn(c, listener) })
}

func serve(t testing.TB, b *broker.Broker, handle func(net.Conn)) string {
	t.Helper()
	addr, stop := Listen(t, handle)
	t.Cleanup(func() {
		stop()
		b.Close(2 * time.Second)
	})
	return addr
}

// Listen accepts connections on 127.0.0.1 and hands each to handle, on a
// goroutine of its own, until stop is called or the test ends; it returns
// the listener's address. stop closes the listener and waits for the
// accepting goroutine; it may be called more than once.
func Listen(t testing.TB, handle func(net.Conn)) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	stop = func() {
		ln.Close()
		wg.Wait()
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}
