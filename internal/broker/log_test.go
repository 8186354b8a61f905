package broker

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
)

// logRecord is a captured log line: its message and attributes as text.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// captureHandler is an slog.Handler that keeps every record.
type captureHandler struct {
	mu   *sync.Mutex
	recs *[]logRecord
}

func newCapture() captureHandler { return captureHandler{mu: new(sync.Mutex), recs: new([]logRecord)} }

func (captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h captureHandler) WithAttrs([]slog.Attr) slog.Handler     { return h }
func (h captureHandler) WithGroup(string) slog.Handler          { return h }
func (h captureHandler) Handle(_ context.Context, r slog.Record) error {
	lr := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		lr.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, lr)
	h.mu.Unlock()
	return nil
}

// find returns the records with the message whose client_id is id.
func (h captureHandler) find(msg, id string) []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logRecord
	for _, r := range *h.recs {
		if r.msg == msg && r.attrs["client_id"] == id {
			out = append(out, r)
		}
	}
	return out
}

// wait returns the one record with the message and client ID, waiting
// up to 5 s for it; a second one fails the test.
func (h captureHandler) wait(t *testing.T, msg, id string) logRecord {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if rs := h.find(msg, id); len(rs) == 1 {
			return rs[0]
		} else if len(rs) > 1 {
			t.Fatalf("%d %q lines for %s: %+v", len(rs), msg, id, rs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line for %q", msg, id)
		}
	}
}

// The broker logs one line per connect and one per disconnect, at info,
// with the client ID, the remote address and, for a disconnect or a
// refused connect, the reason.
func TestConnectDisconnectLog(t *testing.T) {
	logs := newCapture()
	lim := config.Default().Limits
	b := New(lim, slog.New(logs))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); b.HandleConnOn(nc, "loop") }()
		}
	}()
	defer func() { ln.Close(); <-done; b.Close(2 * time.Second); wg.Wait() }()
	lb := struct{ addr string }{ln.Addr().String()}

	check := func(r logRecord, id, remote, reason string) {
		t.Helper()
		if r.level != slog.LevelInfo || r.attrs["client_id"] != id || r.attrs["remote"] != remote ||
			(reason != "" && r.attrs["reason"] != reason) {
			t.Errorf("%q line: %+v, want client_id %q remote %q reason %q", r.msg, r, id, remote, reason)
		}
	}
	session := func(id string, ending func(c *rawClient), reason string) {
		t.Helper()
		c := dialRaw(t, lb.addr, packet.V5)
		remote := c.nc.LocalAddr().String()
		c.connect(id, true, 0)
		con := logs.wait(t, "client connected", id)
		check(con, id, remote, "")
		if con.attrs["listener"] != "loop" || con.attrs["version"] != "5" {
			t.Errorf("connect line: %+v, want listener loop and version 5", con)
		}
		ending(c)
		check(logs.wait(t, "client disconnected", id), id, remote, reason)
	}

	session("normal", func(c *rawClient) { c.mustSend(&packet.Disconnect{}) }, "client disconnected (normal)")
	session("with-will", func(c *rawClient) { c.mustSend(&packet.Disconnect{ReasonCode: 0x04}) }, "client disconnected (with will)")
	session("vanished", func(c *rawClient) { c.nc.Close() }, "connection closed by client")
	session("bad-packet", func(c *rawClient) { c.nc.Write([]byte{0xf0, 0x00}) }, "") // reserved packet type 15
	if r := logs.find("client disconnected", "bad-packet"); len(r) != 1 || r[0].attrs["reason"] == "" {
		t.Errorf("protocol error line: %+v, want a reason", r)
	}
	session("kicked", func(c *rawClient) {
		if !b.Kick("kicked") {
			t.Error("kick: not connected")
		}
	}, "kicked by admin")
	session("taken", func(c *rawClient) {
		dialRaw(t, lb.addr, packet.V5).connect("taken", true, 0)
	}, "session taken over")

	// Keep alive 1 s and silence: cut after 1.5 s.
	c := dialRaw(t, lb.addr, packet.V5)
	remote := c.nc.LocalAddr().String()
	c.mustSend(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "silent", KeepAlive: 1})
	c.read()
	check(logs.wait(t, "client disconnected", "silent"), "silent", remote, "keep alive timeout")

	// A refused connect: 3.1.1 without a client ID and without a clean
	// session.
	r := dialRaw(t, lb.addr, packet.V311)
	remote = r.nc.LocalAddr().String()
	r.mustSend(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, KeepAlive: 30})
	r.read()
	ref := logs.wait(t, "connect refused", "")
	check(ref, "", remote, "empty client identifier")
	if _, ok := ref.attrs["client_id"]; !ok {
		t.Errorf("refused connect line without client_id: %+v", ref)
	}
	for _, id := range []string{"normal", "with-will", "vanished", "bad-packet", "kicked", "taken", "silent"} {
		if n := len(logs.find("client connected", id)); n != 1 && id != "taken" {
			t.Errorf("%d connect lines for %s", n, id)
		}
	}
	if n := len(logs.find("client connected", "taken")); n != 2 {
		t.Errorf("%d connect lines for taken, want 2", n)
	}
}
