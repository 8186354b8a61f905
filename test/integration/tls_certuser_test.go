package integration

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
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// clientCertNames returns a client certificate signed by p's CA with the
// given subject CN, DNS SAN and e-mail SAN.
func (p *testPKI) clientCertNames(cn, dns, email string) tls.Certificate {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(2000),
		Subject:        pkix.Name{CommonName: cn},
		DNSNames:       []string{dns},
		EmailAddresses: []string{email},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// connectOver runs an MQTT 5 CONNECT with paho.golang on nc (keep alive 0:
// see wsV5Client), with a user name claim when user is not empty.
func connectOver(t *testing.T, nc net.Conn, id, user string) (*v5Client, *paho.Connack) {
	t.Helper()
	c := &v5Client{recv: make(chan *paho.Publish, 100), disc: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.recv <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, Username: user, UsernameFlag: user != ""})
	t.Cleanup(func() { nc.Close() })
	if err != nil {
		return nil, ack
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}); <-c.Done() })
	return c, ack
}

// auth.cert_username maps a verified client certificate to the user name
// (cn, san_dns, san_email), over mqtts and over wss alike: no password is
// needed, the mapped name wins over a user name in CONNECT, and the ACL
// applies to that name; without a certificate, an anonymous client is
// refused.
func TestCertUsernameACL(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	cert := pki.clientCertNames("sensor-cn", "sensor-dns.devices", "sensor@devices.example")
	acl := filepath.Join(t.TempDir(), "acl")
	writeFile(t, acl, "allow all any sensors/%u/#\n")
	for _, tc := range []struct{ mapping, user string }{
		{"cn", "sensor-cn"}, {"san_dns", "sensor-dns.devices"}, {"san_email", "sensor@devices.example"},
	} {
		t.Run(tc.mapping, func(t *testing.T) {
			t.Parallel()
			srv := startTLSBroker(t, pki, func(c *starling.Config) {
				c.Store = "memory"
				c.TLS.ClientAuth = "optional"
				c.TLS.ClientCAFile = pki.CAFile
				c.Auth.AllowAnonymous = false
				c.Auth.CertUsername = tc.mapping
				c.Auth.ACLFile = acl
			})
			withCert := pki.ClientConfig(cert)
			for _, tr := range []struct {
				name string
				dial func(*testing.T, *starling.Server, *tls.Config) (net.Conn, error)
			}{
				{"mqtts", func(t *testing.T, s *starling.Server, c *tls.Config) (net.Conn, error) { return dialMQTTS(t, s, c) }},
				{"wss", dialWSS},
			} {
				// A user name claimed in CONNECT does not count: the
				// certificate's name does.
				c, ack := connectOver(t, mustConn(t)(tr.dial(t, srv, withCert)), tr.name+"-dev", "sensor-other")
				if c == nil {
					t.Fatalf("%s with a certificate: CONNACK %+v", tr.name, ack)
				}
				mine := "sensors/" + tc.user + "/t"
				c.sub(t, paho.SubscribeOptions{Topic: mine, QoS: 1})
				c.pub(t, &paho.Publish{Topic: mine, QoS: 1, Payload: []byte(tr.name)})
				if m := c.expect(t); m.Topic != mine || string(m.Payload) != tr.name {
					t.Fatalf("%s: got %s %q", tr.name, m.Topic, m.Payload)
				}
				ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
				r, _ := c.Publish(ctx, &paho.Publish{Topic: "sensors/sensor-other/t", QoS: 1, Payload: []byte("x")})
				cancel()
				if r == nil || r.ReasonCode != byte(packet.NotAuthorized) {
					t.Fatalf("%s: publish under the claimed name: %+v, want PUBACK 0x87", tr.name, r)
				}

				// Without a certificate the client is anonymous: refused.
				if c, ack := connectOver(t, mustConn(t)(tr.dial(t, srv, pki.ClientConfig())), tr.name+"-anon", ""); c != nil || ack == nil || ack.ReasonCode != byte(packet.NotAuthorized) {
					t.Fatalf("%s without a certificate: connected %v, CONNACK %+v, want 0x87", tr.name, c != nil, ack)
				}
			}
		})
	}
}
