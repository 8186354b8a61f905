package browser

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// issueCert makes a certificate for cn signed by ca (self-signed when ca
// is nil); server certificates are for 127.0.0.1.
func issueCert(t *testing.T, cn string, ca *tls.Certificate, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	parent, signer := tmpl, any(key)
	switch {
	case ca == nil:
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	case server:
		parent, signer = ca.Leaf, ca.PrivateKey
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}
	default:
		parent, signer = ca.Leaf, ca.PrivateKey
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// tlsClient serves MQTT over TLS (client certificates verified when
// given) on a new loopback listener of srv's broker, and connects a
// paho.golang client to it with a certificate for cn.
func tlsClient(t *testing.T, srv *server, id, cn string) {
	t.Helper()
	ca := issueCert(t, "test CA", nil, false)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	cfg := &tls.Config{Certificates: []tls.Certificate{issueCert(t, "broker", &ca, true)}, ClientCAs: pool,
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
		Certificates: []tls.Certificate{issueCert(t, cn, &ca, false)}})
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
