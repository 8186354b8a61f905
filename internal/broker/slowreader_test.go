package broker

import (
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
)

// stalledConn is a server-side connection whose writes time out once
// stall is set, as a client that stopped reading makes them do.
type stalledConn struct {
	net.Conn
	stall *atomic.Bool
}

func (c stalledConn) Write(b []byte) (int, error) {
	if c.stall.Load() {
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}
	}
	return c.Conn.Write(b)
}

// A client cut off because writes to it time out is logged as a slow
// reader, not as the "use of closed network connection" its reader then
// sees.
func TestSlowReaderCutReason(t *testing.T) {
	logs := newCapture()
	b := New(config.Default().Limits, slog.New(logs))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var stall atomic.Bool
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		for first := true; ; first = false {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if first {
				nc = stalledConn{nc, &stall}
			}
			wg.Add(1)
			go func() { defer wg.Done(); b.HandleConnOn(nc, "loop") }()
		}
	}()
	defer func() { ln.Close(); <-done; b.Close(2 * time.Second); wg.Wait() }()

	sub := dialRaw(t, ln.Addr().String(), packet.V5)
	sub.connect("reader", true, 0)
	sub.mustSend(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "t"}}})
	sub.read()
	stall.Store(true)
	pub := dialRaw(t, ln.Addr().String(), packet.V5)
	pub.connect("writer", true, 0)
	pub.mustSend(&packet.Publish{Topic: "t", Payload: []byte("x")})
	r := logs.wait(t, "client disconnected", "reader")
	if want := "slow reader: write timed out, the client stopped reading"; r.attrs["reason"] != want {
		t.Fatalf("disconnect reason %q, want %q", r.attrs["reason"], want)
	}
}
