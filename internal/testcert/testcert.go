// Package testcert makes TLS certificates for tests: a CA and the server and
// client certificates it signs. It imports nothing of the project, so any
// package's tests can use it.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// Issue makes an ECDSA certificate for cn, valid for an hour either
// side of now: a self-signed CA when ca is nil, otherwise one signed by ca,
// for a server on 127.0.0.1 when server is true and for a client when not.
// Leaf is set.
func Issue(t testing.TB, cn string, ca *tls.Certificate, server bool) tls.Certificate {
	t.Helper()
	return IssueSerial(t, cn, time.Now().UnixNano(), ca, server)
}

// IssueSerial is Issue with the given serial number, for tests that tell
// certificates apart by it.
func IssueSerial(t testing.TB, cn string, serial int64, ca *tls.Certificate, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
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
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// CertPEM is c's leaf certificate in PEM, as in a certificate file.
func CertPEM(c tls.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
}

// KeyPEM is c's private key in PEM (PKCS #8), as in a key file.
func KeyPEM(t testing.TB, c tls.Certificate) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// PKI is a test CA that serves and dials TLS on loopback with certificates
// it signs.
type PKI struct {
	t    testing.TB
	CA   tls.Certificate
	Pool *x509.CertPool // holds CA
}

// NewPKI makes a CA.
func NewPKI(t testing.TB) *PKI {
	ca := Issue(t, "test CA", nil, false)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	return &PKI{t: t, CA: ca, Pool: pool}
}

// Serve listens on a new loopback port until the test ends and hands each
// accepted connection, as a TLS server (TLS 1.2 or later, a client
// certificate verified when given), to handle on its own goroutine. It
// returns the address.
func (p *PKI) Serve(handle func(net.Conn)) string {
	p.t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{Issue(p.t, "broker", &p.CA, true)}, ClientCAs: p.Pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(tls.Server(c, cfg))
		}
	}()
	return ln.Addr().String()
}

// Dial connects to addr over TLS 1.3 with a client certificate for cn.
func (p *PKI) Dial(addr, cn string) net.Conn {
	p.t.Helper()
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.Pool, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{Issue(p.t, cn, &p.CA, false)}})
	if err != nil {
		p.t.Fatal(err)
	}
	return nc
}
