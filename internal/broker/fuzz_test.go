package broker

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
)

// fuzzHooks is an Authenticator (with a one-round enhanced method, "fuzz")
// and an Authorizer, so that fuzzed input reaches the refusal, denial and
// AUTH paths too.
type fuzzHooks struct{}

func (fuzzHooks) Authenticate(_ context.Context, c *ConnectInfo) (Identity, packet.ReasonCode, error) {
	if c.Username == "bad" {
		return Identity{}, packet.BadUsernameOrPassword, nil
	}
	return Identity{Username: c.Username, Anonymous: !c.HasUsername}, packet.Success, nil
}

func (fuzzHooks) AuthMethods() []string { return []string{"fuzz"} }

func (fuzzHooks) StartAuth(_ context.Context, c *ConnectInfo, _ string, data []byte) (AuthStep, error) {
	return AuthStep{Data: data, Next: func(_ context.Context, reply []byte) (AuthStep, error) {
		if string(reply) != "ok" {
			return AuthStep{Code: packet.NotAuthorized}, nil
		}
		return AuthStep{Code: packet.Success, Identity: Identity{Username: "u"}}, nil
	}}, nil
}

func (fuzzHooks) Allow(c *ClientInfo, act Action, topic string) bool {
	switch act {
	case ActPublish:
		return !strings.Contains(topic, "deny")
	case ActSubscribe:
		return topic != "#" && !strings.HasPrefix(topic, "deny")
	}
	return !strings.HasPrefix(topic, "a/secret")
}

// panicLog is a slog handler that keeps the "connection handler panic"
// lines: the broker recovers a panic in a connection, so the log is where
// a fuzz run sees one.
type panicLog struct {
	mu     sync.Mutex
	panics []string
}

func (*panicLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *panicLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "connection handler panic" {
		return nil
	}
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool { b.WriteString(a.Key + "=" + a.Value.String() + "\n"); return true })
	l.mu.Lock()
	l.panics = append(l.panics, b.String())
	l.mu.Unlock()
	return nil
}
func (l *panicLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *panicLog) WithGroup(string) slog.Handler      { return l }

// drainReader reports on eof when its reader is exhausted.
type drainReader struct {
	r    io.Reader
	eof  chan struct{}
	once sync.Once
}

func (d *drainReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err == io.EOF {
		d.once.Do(func() { close(d.eof) })
	}
	return n, err
}

// fuzzConnect is the CONNECT put before the fuzzed bytes, by variant: 0
// MQTT 3.1.1 with a user name, 1 MQTT 5 with a user name, 2 MQTT 5 starting
// the enhanced authentication method "fuzz" (the bytes then carry the
// AUTH exchange), 3 MQTT 5 anonymous with a will.
func fuzzConnect(variant byte) (*packet.Connect, byte) {
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "fuzz", KeepAlive: 60}
	switch variant % 4 {
	case 0:
		cp.ProtocolVersion = packet.V311
		cp.Username, cp.HasUsername, cp.Password, cp.HasPassword = "u", true, []byte("p"), true
	case 1:
		cp.Username, cp.HasUsername, cp.Password, cp.HasPassword = "u", true, []byte("p"), true
	case 2:
		cp.Properties.AuthMethod, cp.Properties.AuthData = "fuzz", []byte("hello")
	case 3:
		cp.Will = &packet.Will{Topic: "a/will", Payload: []byte("gone"), QoS: 1}
	}
	return cp, cp.ProtocolVersion
}

// fuzzHeapSlack bounds what one input may leave on the heap while its
// connection is still open (sessions, subscriptions, retained and queued
// messages, buffers): a fixed allowance plus a multiple of the input.
const fuzzHeapSlack = 32 << 20

// FuzzConnection feeds arbitrary bytes to a connection after a valid CONNECT
// (see fuzzConnect), with an authenticator and an ACL installed: the broker
// must never panic (a recovered panic, which ends only that connection,
// fails the input too), must not grow its heap beyond a bound set by the
// input's size, and must end the connection or keep serving, never hang.
// Seeds beyond those added here are in testdata/fuzz/FuzzConnection.
func FuzzConnection(f *testing.F) {
	seeds := []packet.Packet{
		&packet.Publish{Topic: "a/b", QoS: 1, PacketID: 1, Payload: []byte("x")},
		&packet.Publish{Topic: "a/b", QoS: 2, PacketID: 2, Retain: true, Payload: []byte("x")},
		&packet.Subscribe{PacketID: 3, Subscriptions: []packet.Subscription{{Filter: "a/#", QoS: 2}, {Filter: "$share/g/a/+", QoS: 1}}},
		&packet.Unsubscribe{PacketID: 4, Filters: []string{"a/#"}},
		&packet.Ack{Kind: packet.PUBREL, PacketID: 2},
		&packet.Pingreq{},
		&packet.Disconnect{},
	}
	denied := []packet.Packet{
		&packet.Publish{Topic: "a/secret/x", QoS: 0, Retain: true, Payload: []byte("x")},
		&packet.Subscribe{PacketID: 5, Subscriptions: []packet.Subscription{{Filter: "#"}, {Filter: "a/#", QoS: 1}, {Filter: "deny/x"}}},
		&packet.Publish{Topic: "deny/x", QoS: 1, PacketID: 6, Payload: []byte("x")},
		&packet.Publish{Topic: "deny/y", QoS: 2, PacketID: 7, Payload: []byte("x")},
	}
	for _, v := range []byte{packet.V311, packet.V5} {
		var b []byte
		for _, p := range append(seeds, denied...) {
			b, _ = packet.Append(b, p, v)
		}
		f.Add(v, b)
		f.Add(v, []byte{0x30, 0x7f, 0x00})
	}
	auth := func(rc packet.ReasonCode, method, data string) *packet.Auth {
		return &packet.Auth{ReasonCode: rc, Properties: packet.Properties{AuthMethod: method, AuthData: []byte(data)}}
	}
	for _, script := range [][]packet.Packet{
		{auth(packet.ContinueAuthentication, "fuzz", "ok"), seeds[0], auth(packet.ReAuthenticate, "fuzz", "again"), auth(packet.ContinueAuthentication, "fuzz", "no")},
		{auth(packet.ContinueAuthentication, "fuzz", "no")},
		{auth(packet.ContinueAuthentication, "other", "ok")},
		{seeds[0]},
	} {
		var b []byte
		for _, p := range script {
			b, _ = packet.Append(b, p, packet.V5)
		}
		f.Add(byte(2), b)
	}
	f.Add(byte(3), []byte{0xe0, 0x02, 0x04, 0x00}) // DISCONNECT with will
	f.Fuzz(func(t *testing.T, variant byte, data []byte) {
		cp, v := fuzzConnect(variant)
		lim := config.Default().Limits
		lim.ConnectTimeout = time.Second
		log := &panicLog{}
		br := New(lim, slog.New(log))
		br.SetAuth(fuzzHooks{}, fuzzHooks{})
		script, _ := packet.Append(nil, cp, v)
		script = append(script, data...)

		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heapBefore, allocBefore := ms.HeapAlloc, ms.TotalAlloc

		var written atomic.Int64
		in := &drainReader{r: bytes.NewReader(script), eof: make(chan struct{})}
		c := &scriptConn{r: in, closed: make(chan struct{}), written: &written}
		done := make(chan struct{})
		go func() { br.HandleConn(c); close(done) }()
		// The input is read to its end, or the broker ends the connection
		// first.
		select {
		case <-in.eof:
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("input not read within 5 s")
		}
		time.Sleep(time.Millisecond) // let the last packet be handled
		// What the connection holds is at most what it allocated; only
		// when that is over the bound is a (slow) collection needed to
		// see what is still live.
		bound := uint64(fuzzHeapSlack + 64*len(script))
		if runtime.ReadMemStats(&ms); ms.TotalAlloc-allocBefore > bound {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > heapBefore && ms.HeapAlloc-heapBefore > bound {
				t.Fatalf("heap grew by %d bytes for %d bytes of input", ms.HeapAlloc-heapBefore, len(script))
			}
		}
		br.Close(time.Second)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("handler did not return")
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		if len(log.panics) > 0 {
			t.Fatalf("connection handler panicked:\n%s", log.panics[0])
		}
	})
}

// The fuzz target's panic detector sees a recovered panic: an Authorizer
// that panics fails an input that subscribes.
func TestFuzzSeesRecoveredPanic(t *testing.T) {
	log := &panicLog{}
	br := New(config.Default().Limits, slog.New(log))
	br.SetAuth(nil, panicky{})
	cp, v := fuzzConnect(1)
	script, _ := packet.Append(nil, cp, v)
	script, _ = packet.Append(script, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a"}}}, v)
	var written atomic.Int64
	c := &scriptConn{r: bytes.NewReader(script), closed: make(chan struct{}), written: &written}
	done := make(chan struct{})
	go func() { br.HandleConn(c); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not return after its panic")
	}
	br.Close(time.Second)
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.panics) != 1 || !strings.Contains(log.panics[0], "authorizer bug") {
		t.Fatalf("recorded panics %q, want the authorizer's", log.panics)
	}
}

type panicky struct{}

func (panicky) Allow(*ClientInfo, Action, string) bool { panic("authorizer bug") }
