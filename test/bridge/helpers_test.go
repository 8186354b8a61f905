// Package bridge tests bridges between Starling and other brokers: a real
// Mosquitto started by each test, and a second Starling over WebSocket.
package bridge

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/testcert"
	"github.com/starling-mqtt/starling/internal/testutil"
)

const mosquittoBin = "/usr/sbin/mosquitto"

// needMosquitto skips the test without Mosquitto, or fails it under CI
// (./test.sh installs it).
func needMosquitto(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(mosquittoBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (CI=true; ./test.sh installs Debian's mosquitto): %v", mosquittoBin, err)
		}
		t.Skipf("%s not found; ./test.sh installs it", mosquittoBin)
	}
}

// waitDial waits until addr accepts connections.
func waitDial(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, "listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// waitFor polls cond until it holds or the test's patience runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testutil.Patience(t))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mosquitto is a Mosquitto broker run by a test.
type mosquitto struct {
	t    *testing.T
	addr string
	conf string
	cmd  *exec.Cmd
}

// startMosquitto runs Mosquitto on a free loopback port (on addr when
// given) until the test ends.
func startMosquitto(t *testing.T, addr string) *mosquitto {
	t.Helper()
	needMosquitto(t)
	if addr == "" {
		addr = freeport.Addr(t)
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	body := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n", port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{t: t, addr: addr, conf: conf}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command(mosquittoBin, "-c", m.conf)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Getenv("STARLING_TEST_LOG") != "" {
		m.cmd.Stderr = os.Stderr
	}
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	waitDial(m.t, m.addr)
}

func (m *mosquitto) stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
		m.cmd = nil
	}
}

// proxy is a TCP proxy that a test can cut.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

// startProxy forwards a new loopback port to target until the test ends.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.Cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[u] = struct{}{}
	p.mu.Unlock()
	go func() { io.Copy(u, c); u.Close() }()
	io.Copy(c, u)
	c.Close()
}

// Cut closes every connection and refuses new ones until Heal.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// client is a paho.golang client of some broker, for the tests' own
// publishers and subscribers.
type client struct {
	*testutil.Paho
}

func dial(t *testing.T, addr, id string) client {
	t.Helper()
	c, _ := testutil.DialPaho(t, addr, id, nil)
	return client{c}
}

// sub subscribes to filters at QoS 2.
func (c client) sub(t *testing.T, filters ...string) {
	t.Helper()
	var opts []paho.SubscribeOptions
	for _, f := range filters {
		opts = append(opts, paho.SubscribeOptions{Topic: f, QoS: 2})
	}
	c.Sub(t, opts...)
}

func (c client) pub(t *testing.T, topic string, qos byte, payload string) {
	t.Helper()
	c.Pub(t, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
}

// expect returns the next message, failing the test if none comes in time.
func (c client) expect(t *testing.T) *paho.Publish {
	t.Helper()
	return c.Expect(t, testutil.Patience(t))
}

// warmUp publishes on topic through pub until sub receives one (the
// bridge's subscriptions are in place), then drains what sub got: the
// first message sent while the remote subscription is not in place yet
// is not kept by any broker.
func warmUp(t *testing.T, pub, sub client, topic string) {
	t.Helper()
	deadline := time.Now().Add(testutil.Patience(t))
	for {
		pub.pub(t, topic, 1, "warm-up")
		select {
		case p := <-sub.Recv:
			if string(p.Payload) != "warm-up" {
				t.Fatalf("warm-up: got %q on %s", p.Payload, p.Topic)
			}
			for n := 0; ; n++ {
				if n > 100 {
					t.Fatalf("warm-up on %s: messages keep coming (a loop?)", topic)
				}
				select {
				case <-sub.Recv:
				case <-time.After(200 * time.Millisecond):
					return
				}
			}
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm-up on %s: nothing came through", topic)
		}
	}
}

// status is the state of srv's only bridge.
func status(srv *starling.Server) starling.BridgeStatus { return srv.Bridges()[0] }

// tlsFiles writes a CA and a server certificate for 127.0.0.1 signed by
// it; it returns the CA file, certificate file and key file.
func tlsFiles(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	pki := testcert.NewPKI(t)
	srv := testcert.Issue(t, "broker", &pki.CA, true)
	write := func(name string, blocks ...*pem.Block) string {
		var b []byte
		for _, bl := range blocks {
			b = append(b, pem.EncodeToMemory(bl)...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kder, err := x509.MarshalPKCS8PrivateKey(srv.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: pki.CA.Leaf.Raw}),
		write("cert.pem", &pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate[0]}),
		write("key.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
