package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// startTLSBroker starts a broker with mqtts and https on 127.0.0.1 serving
// pki's server certificate; mutate may change the rest.
func startTLSBroker(t *testing.T, pki *testPKI, mutate func(*starling.Config)) *starling.Server {
	t.Helper()
	srv, _ := testutil.StartBroker(t, func(c *starling.Config) {
		c.MQTTS, c.HTTPS = "127.0.0.1:0", "127.0.0.1:0"
		c.TLS.CertFile, c.TLS.KeyFile = pki.CertFile, pki.KeyFile
		c.Limits.MaxPacketSize = 4 << 20
		if mutate != nil {
			mutate(c)
		}
	})
	return srv
}

// dialMQTTS opens a TLS connection to the mqtts listener and completes the
// handshake.
func dialMQTTS(t *testing.T, srv *starling.Server, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", srv.MQTTSAddr().String())
	if err != nil {
		return nil, err
	}
	return nc.(*tls.Conn), nil
}

// dialWSS opens MQTT over secure WebSocket at /mqtt.
func dialWSS(t *testing.T, srv *starling.Server, cfg *tls.Config) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	return transport.DialWSConfig(ctx, "wss://"+srv.HTTPSAddr().String()+"/mqtt",
		transport.WSDialConfig{Subprotocol: "mqtt", TLSConfig: cfg})
}

func mustConn(t *testing.T) func(net.Conn, error) net.Conn {
	return func(c net.Conn, err error) net.Conn {
		t.Helper()
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		return c
	}
}

func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// paho.golang over mqtts and over wss, and TCP, all reach one broker.
func TestTLSMQTTSAndWSS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, nil)
	if srv.MQTTSAddr() == nil || srv.HTTPSAddr() == nil {
		t.Fatalf("MQTTSAddr %v, HTTPSAddr %v: want both", srv.MQTTSAddr(), srv.HTTPSAddr())
	}
	tc, err := dialMQTTS(t, srv, pki.ClientConfig())
	if err != nil {
		t.Fatalf("dial mqtts: %v", err)
	}
	if v := tc.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("TLS version %x", v)
	}
	sub := wsV5Client(t, tc, "mqtts-sub")
	sub.sub(t, paho.SubscribeOptions{Topic: "tls/#", QoS: 2})

	pub := wsV5Client(t, mustConn(t)(dialWSS(t, srv, pki.ClientConfig())), "wss-pub")
	tcpPub, _ := dialV5(t, srv.Addr().String(), "tcp-pub", nil)
	big := payloadOf(1 << 20)
	for i, p := range []struct {
		c       *v5Client
		qos     byte
		payload []byte
	}{{pub, 0, []byte("q0")}, {pub, 1, []byte("q1")}, {pub, 2, []byte("q2")}, {pub, 1, big}, {tcpPub, 1, big}} {
		p.c.pub(t, &paho.Publish{Topic: "tls/x", QoS: p.qos, Payload: p.payload})
		m := sub.expect(t)
		if m.Topic != "tls/x" || m.QoS != p.qos || string(m.Payload) != string(p.payload) {
			t.Fatalf("message %d: got %q QoS %d with %d bytes, want QoS %d with %d bytes", i, m.Topic, m.QoS, len(m.Payload), p.qos, len(p.payload))
		}
	}
	// And the other way: a wss subscriber.
	pub.sub(t, paho.SubscribeOptions{Topic: "back", QoS: 1})
	sub.pub(t, &paho.Publish{Topic: "back", QoS: 1, Payload: big})
	if m := pub.expect(t); string(m.Payload) != string(big) {
		t.Fatalf("wss subscriber got %d bytes, want %d", len(m.Payload), len(big))
	}
}

// paho.mqtt.golang's own TLS and secure WebSocket dialers (ssl:// and
// wss:// URLs) work too.
func TestTLSPahoV3URLs(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, nil)
	connect := func(url, id string, recv chan mqtt.Message) mqtt.Client {
		t.Helper()
		o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
			SetTLSConfig(pki.ClientConfig()).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(testutil.Patience(t)).SetWriteTimeout(testutil.Patience(t)).SetStore(mqtt.NewMemoryStore()).
			SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { recv <- m })
		c := mqtt.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", url, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(100) })
		return c
	}
	recv := make(chan mqtt.Message, 10)
	sub := connect("wss://"+srv.HTTPSAddr().String()+"/mqtt", "v3-wss", recv)
	if tok := sub.Subscribe("v3tls/#", 1, nil); !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub := connect("ssl://"+srv.MQTTSAddr().String(), "v3-ssl", make(chan mqtt.Message, 1))
	big := payloadOf(200 << 10)
	if tok := pub.Publish("v3tls/a", 1, false, big); !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case m := <-recv:
		if m.Topic() != "v3tls/a" || string(m.Payload()) != string(big) {
			t.Fatalf("got %q with %d bytes", m.Topic(), len(m.Payload()))
		}
	case <-time.After(testutil.Patience(t)):
		t.Fatal("no message over wss within 5s")
	}
}

// refused asserts that the server ended the TLS connection during or right
// after the handshake (in TLS 1.3 the client finishes its side before the
// server has checked the client's certificate).
func refused(t *testing.T, nc net.Conn, err error) {
	t.Helper()
	if err == nil {
		nc.SetReadDeadline(time.Now().Add(testutil.Patience(t)))
		_, err = nc.Read(make([]byte, 1))
		nc.Close()
	}
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("connection not refused: %v", err)
	}
	if !strings.Contains(err.Error(), "certificate") {
		t.Logf("refused with %v", err)
	}
}

// With tls.client_auth required, a client without a certificate signed by
// the client CA is refused, on mqtts and on wss; one with is served.
func TestTLSClientCertRequired(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	other := newTestPKI(t)
	srv := startTLSBroker(t, pki, func(c *starling.Config) {
		c.TLS.ClientAuth = "required"
		c.TLS.ClientCAFile = pki.CAFile
	})
	forged := pki.ClientConfig()
	forgedCert := other.ClientCert("device-1")
	forged.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forgedCert, nil }

	for name, cfg := range map[string]*tls.Config{"no certificate": pki.ClientConfig(), "other CA": forged} {
		t.Run("mqtts/"+name, func(t *testing.T) {
			tc, err := dialMQTTS(t, srv, cfg)
			refused(t, tc, err)
		})
		t.Run("wss/"+name, func(t *testing.T) {
			nc, err := dialWSS(t, srv, cfg)
			refused(t, nc, err)
		})
	}

	good := pki.ClientConfig(pki.ClientCert("device-1"))
	sub := wsV5Client(t, mustConn(t)(dialMQTTS(t, srv, good)), "device-1")
	sub.sub(t, paho.SubscribeOptions{Topic: "auth/t", QoS: 1})
	pub := wsV5Client(t, mustConn(t)(dialWSS(t, srv, good)), "device-2")
	pub.pub(t, &paho.Publish{Topic: "auth/t", QoS: 1, Payload: []byte("hi")})
	if m := sub.expect(t); string(m.Payload) != "hi" {
		t.Fatalf("got %q", m.Payload)
	}
}

// ReloadCertificates: new connections get the new certificate, a client
// connected before keeps its connection.
func TestTLSReloadCertificates(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, nil)
	serial := func(c net.Conn) int64 {
		t.Helper()
		var cs tls.ConnectionState
		switch c := c.(type) {
		case *tls.Conn:
			cs = c.ConnectionState()
		default:
			t.Fatalf("not a TLS conn: %T", c)
		}
		return cs.PeerCertificates[0].SerialNumber.Int64()
	}
	oldConn, err := dialMQTTS(t, srv, pki.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := serial(oldConn); got != 1 {
		t.Fatalf("first certificate: serial %d, want 1", got)
	}
	old := wsV5Client(t, oldConn, "before-reload")
	old.sub(t, paho.SubscribeOptions{Topic: "reload/t", QoS: 1})

	pki.WriteServerCert(2)
	if err := srv.ReloadCertificates(); err != nil {
		t.Fatalf("ReloadCertificates: %v", err)
	}
	newConn, err := dialMQTTS(t, srv, pki.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := serial(newConn); got != 2 {
		t.Fatalf("after reload: serial %d, want 2", got)
	}
	fresh := wsV5Client(t, newConn, "after-reload")
	fresh.pub(t, &paho.Publish{Topic: "reload/t", QoS: 1, Payload: []byte("still here")})
	if m := old.expect(t); string(m.Payload) != "still here" {
		t.Fatalf("old connection got %q", m.Payload)
	}
	// wss serves the new certificate too.
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	var wssSerial int64
	cfg := pki.ClientConfig()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		wssSerial = cs.PeerCertificates[0].SerialNumber.Int64()
		return nil
	}
	wc, err := transport.DialWSConfig(ctx, "wss://"+srv.HTTPSAddr().String()+"/mqtt", transport.WSDialConfig{Subprotocol: "mqtt", TLSConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	wc.Close()
	if wssSerial != 2 {
		t.Fatalf("wss after reload: serial %d, want 2", wssSerial)
	}

	// A broken file: the reload fails, the old certificate stays.
	pki.write(pki.CertFile, []byte("garbage"))
	if err := srv.ReloadCertificates(); err == nil {
		t.Fatal("ReloadCertificates with a broken file succeeded")
	}
	c3, err := dialMQTTS(t, srv, pki.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got := serial(c3); got != 2 {
		t.Fatalf("after a failed reload: serial %d, want 2", got)
	}
}

// New refuses a configuration whose certificate cannot be loaded, naming
// the keys.
func TestTLSNewBadCertificate(t *testing.T) {
	t.Parallel()
	cfg := starling.DefaultConfig()
	cfg.TCP, cfg.HTTP, cfg.MQTTS = "", "", "127.0.0.1:0"
	cfg.TLS.CertFile, cfg.TLS.KeyFile = "/nonexistent/cert.pem", "/nonexistent/key.pem"
	_, err := starling.New(cfg)
	if err == nil || !strings.Contains(err.Error(), "tls.cert_file") {
		t.Fatalf("New = %v, want an error naming tls.cert_file", err)
	}
	pki := newTestPKI(t)
	cfg.TLS.CertFile, cfg.TLS.KeyFile = pki.CertFile, pki.KeyFile
	cfg.TLS.ClientAuth, cfg.TLS.ClientCAFile = "required", pki.KeyFile // a key is no CA
	if _, err := starling.New(cfg); err == nil || !strings.Contains(err.Error(), "tls.client_ca_file") {
		t.Fatalf("New = %v, want an error naming tls.client_ca_file", err)
	}
}

// A client that opens a TCP connection to mqtts and never starts the TLS
// handshake is closed after limits.connect_timeout, like a silent TCP
// client.
func TestTLSSilentClientTimesOut(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, func(c *starling.Config) { c.Limits.ConnectTimeout = 300 * time.Millisecond })
	nc, err := net.DialTimeout("tcp", srv.MQTTSAddr().String(), testutil.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	nc.SetReadDeadline(time.Now().Add(testutil.Patience(t)))
	_, err = nc.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read = %v; want the broker to close the connection", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, want about the 300ms connect timeout", d)
	}
}

// A 16 MiB message crosses wss and mqtts intact (limits.max_packet_size
// above it), as over TCP.
func TestTLS16MiBOverWSS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, func(c *starling.Config) { c.Limits.MaxPacketSize = 17 << 20 })
	sub := wsV5Client(t, mustConn(t)(dialWSS(t, srv, pki.ClientConfig())), "wss-big-sub")
	sub.sub(t, paho.SubscribeOptions{Topic: "big", QoS: 1})
	tc, err := dialMQTTS(t, srv, pki.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	pub := wsV5Client(t, tc, "mqtts-big-pub")
	big := payloadOf(16 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "big", QoS: 1, Payload: big}); err != nil {
		t.Fatalf("publish 16 MiB: %v", err)
	}
	select {
	case m := <-sub.recv:
		if string(m.Payload) != string(big) {
			t.Fatalf("got %d bytes, want %d intact", len(m.Payload), len(big))
		}
	case <-ctx.Done():
		t.Fatal("16 MiB message not received within 30s")
	}
}
