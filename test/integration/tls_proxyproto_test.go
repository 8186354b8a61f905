package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// startLoggedBroker starts a broker on 127.0.0.1 whose info log goes to
// the returned buffer.
func startLoggedBroker(t *testing.T, mutate func(*starling.Config)) (*starling.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg := starling.DefaultConfig()
	cfg.TCP, cfg.HTTP, cfg.Data = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.ShutdownTimeout = 2 * time.Second
	mutate(&cfg)
	srv, err := starling.New(cfg, starling.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	if srv.Addr() == nil && srv.HTTPAddr() == nil {
		t.Fatalf("serve: %v", <-served)
	}
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv, logs
}

// dialProxied connects to addr and sends a PROXY v1 header claiming src.
func dialProxied(t *testing.T, addr, src string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, testutil.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(src)
	if _, err := fmt.Fprintf(nc, "PROXY TCP4 %s 192.0.2.1 %s 1883\r\n", host, port); err != nil {
		t.Fatal(err)
	}
	return nc
}

// waitLog waits for a log line holding all of parts.
func waitLog(t *testing.T, logs *syncBuffer, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(testutil.Patience(t))
	for time.Now().Before(deadline) {
		for l := range strings.Lines(logs.String()) {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line with %q in:\n%s", parts, logs.String())
}

// expectDropped asserts the broker closes nc without answering a CONNECT.
func expectDropped(t *testing.T, nc net.Conn) {
	t.Helper()
	defer nc.Close()
	b, err := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "x", KeepAlive: 30}, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(testutil.Patience(t)))
	nc.Write(b) // may fail if already closed
	n, err := nc.Read(make([]byte, 64))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read %d bytes, %v; want the connection closed without CONNACK", n, err)
	}
}

// With proxy_protocol listing the load balancer, the address in its PROXY
// header is the client's, on tcp, mqtts, http and https alike; the load
// balancer must send the header.
func TestProxyProtocolFromTrustedBalancer(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv, logs := startLoggedBroker(t, func(c *starling.Config) {
		c.MQTTS, c.HTTPS = "127.0.0.1:0", "127.0.0.1:0"
		c.TLS.CertFile, c.TLS.KeyFile = pki.CertFile, pki.KeyFile
		c.ProxyProtocol = []string{"127.0.0.1"}
	})

	wsV5Client(t, dialProxied(t, srv.Addr().String(), "198.51.100.1:40001"), "pp-tcp")
	waitLog(t, logs, "client connected", "client_id=pp-tcp", "remote=198.51.100.1:40001")

	tc := tls.Client(dialProxied(t, srv.MQTTSAddr().String(), "198.51.100.2:40002"), pki.ClientConfig())
	wsV5Client(t, tc, "pp-mqtts")
	waitLog(t, logs, "client_id=pp-mqtts", "remote=198.51.100.2:40002")

	for i, u := range []struct {
		url string
		tls *tls.Config
	}{{"ws://" + srv.HTTPAddr().String(), nil}, {"wss://" + srv.HTTPSAddr().String(), pki.ClientConfig()}} {
		src := fmt.Sprintf("198.51.100.%d:4000%d", 3+i, 3+i)
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		wc, err := transport.DialWSConfig(ctx, u.url+"/mqtt", transport.WSDialConfig{Subprotocol: "mqtt", TLSConfig: u.tls,
			NetDial: func(context.Context, string, string) (net.Conn, error) {
				return dialProxied(t, strings.TrimPrefix(strings.TrimPrefix(u.url, "ws://"), "wss://"), src), nil
			}})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", u.url, err)
		}
		id := fmt.Sprintf("pp-ws-%d", i)
		wsV5Client(t, wc, id)
		waitLog(t, logs, "client_id="+id, "remote="+src)
	}

	// The balancer's address without a header: refused.
	nc, err := net.DialTimeout("tcp", srv.Addr().String(), testutil.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	expectDropped(t, nc)
	waitLog(t, logs, "connection refused: PROXY protocol", "listener=tcp")
}

// A peer that is not a listed balancer may not send a PROXY header (it
// would choose its own address); without one it is served as usual.
func TestProxyProtocolFromUntrustedPeer(t *testing.T) {
	t.Parallel()
	srv, logs := startLoggedBroker(t, func(c *starling.Config) { c.ProxyProtocol = []string{"10.0.0.0/8"} })
	expectDropped(t, dialProxied(t, srv.Addr().String(), "198.51.100.9:1234"))
	waitLog(t, logs, "connection refused: PROXY protocol", "remote=127.0.0.1:")

	c, _ := dialV5(t, srv.Addr().String(), "plain", nil)
	c.sub(t, paho.SubscribeOptions{Topic: "t", QoS: 0})
	waitLog(t, logs, "client_id=plain", "remote=127.0.0.1:")
}

// proxy_protocol_listeners gives a listener its own balancers: here the
// http listener takes PROXY headers from 127.0.0.1 while the tcp listener
// follows proxy_protocol, whose balancers are elsewhere (10.0.0.0/8), so a
// PROXY header from 127.0.0.1 is refused there and a plain client served.
func TestProxyProtocolPerListener(t *testing.T) {
	t.Parallel()
	srv, logs := startLoggedBroker(t, func(c *starling.Config) {
		c.ProxyProtocol = []string{"10.0.0.0/8"}
		c.ProxyProtocolListeners.HTTP = []string{"127.0.0.1"}
	})
	waitLog(t, logs, "listening", "listener=http", "proxy_protocol=true")
	waitLog(t, logs, "listening", "listener=tcp", "proxy_protocol=true")

	// tcp: 127.0.0.1 is no balancer of its.
	expectDropped(t, dialProxied(t, srv.Addr().String(), "198.51.100.20:1"))
	waitLog(t, logs, "connection refused: PROXY protocol", "listener=tcp")
	wsV5Client(t, mustConn(t)(net.DialTimeout("tcp", srv.Addr().String(), testutil.Patience(t))), "ppl-tcp")
	waitLog(t, logs, "client_id=ppl-tcp", "remote=127.0.0.1:")

	// http: 127.0.0.1 is its balancer, so the header is required and used.
	httpAddr := srv.HTTPAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	wc, err := transport.DialWSConfig(ctx, "ws://"+httpAddr+"/mqtt", transport.WSDialConfig{Subprotocol: "mqtt",
		NetDial: func(context.Context, string, string) (net.Conn, error) {
			return dialProxied(t, httpAddr, "198.51.100.21:4021"), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	wsV5Client(t, wc, "ppl-ws")
	waitLog(t, logs, "client_id=ppl-ws", "remote=198.51.100.21:4021")
	if _, err := transport.DialWS(ctx, "ws://"+httpAddr+"/mqtt", "mqtt", nil); err == nil {
		t.Fatal("a WebSocket without a PROXY header from the http listener's balancer was served")
	}
	waitLog(t, logs, "connection refused: PROXY protocol", "listener=http")
}
