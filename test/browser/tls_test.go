package browser

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/testcert"
)

// tlsClient serves MQTT over TLS (client certificates verified when
// given) on a new loopback listener of srv's broker, and connects a
// paho.golang client to it with a certificate for cn.
func tlsClient(t *testing.T, srv *server, id, cn string) {
	t.Helper()
	ca := testcert.Issue(t, "test CA", nil, false)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	cfg := &tls.Config{Certificates: []tls.Certificate{testcert.Issue(t, "broker", &ca, true)}, ClientCAs: pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.b.HandleConn(tls.Server(c, cfg))
		}
	}()
	nc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{testcert.Issue(t, cn, &ca, false)}})
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 45}); err != nil {
		nc.Close()
		t.Fatalf("connect %s over TLS: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}); nc.Close(); <-c.Done() })
}
