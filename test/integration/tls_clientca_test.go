package integration

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling"
)

// ReloadCertificates reloads tls.client_ca_file too: a device whose
// certificate a new CA signed is refused on mqtts and wss until the CA is
// added to the file and the certificates reloaded, then served; a CA
// removed from the file stops being accepted.
func TestTLSReloadClientCA(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	newCA := newTestPKI(t)
	caFile := filepath.Join(t.TempDir(), "client-ca.pem")
	oldPEM, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	newPEM, err := os.ReadFile(newCA.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pki.write(caFile, oldPEM)
	srv := startTLSBroker(t, pki, func(c *starling.Config) {
		c.TLS.ClientAuth = "required"
		c.TLS.ClientCAFile = caFile
	})
	withCert := func(c tls.Certificate) *tls.Config {
		cfg := pki.ClientConfig() // trusts the server's CA
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		return cfg
	}
	oldDevice, newDevice := withCert(pki.ClientCert("old-device")), withCert(newCA.ClientCert("new-device"))

	t.Run("before reload", func(t *testing.T) {
		tc, err := dialMQTTS(t, srv, newDevice)
		refused(t, tc, err)
		nc, err := dialWSS(t, srv, newDevice)
		refused(t, nc, err)
	})

	pki.write(caFile, append(append([]byte{}, oldPEM...), newPEM...))
	if err := srv.ReloadCertificates(); err != nil {
		t.Fatalf("ReloadCertificates: %v", err)
	}
	sub := wsV5Client(t, mustConn(t)(dialMQTTS(t, srv, newDevice)), "new-device-1")
	sub.sub(t, paho.SubscribeOptions{Topic: "ca/t", QoS: 1})
	pub := wsV5Client(t, mustConn(t)(dialWSS(t, srv, newDevice)), "new-device-2")
	pub.pub(t, &paho.Publish{Topic: "ca/t", QoS: 1, Payload: []byte("new ca")})
	if m := sub.expect(t); string(m.Payload) != "new ca" {
		t.Fatalf("got %q", m.Payload)
	}
	old := wsV5Client(t, mustConn(t)(dialWSS(t, srv, oldDevice)), "old-device")
	old.pub(t, &paho.Publish{Topic: "ca/t", QoS: 1, Payload: []byte("old ca")})
	if m := sub.expect(t); string(m.Payload) != "old ca" {
		t.Fatalf("got %q", m.Payload)
	}

	pki.write(caFile, newPEM)
	if err := srv.ReloadCertificates(); err != nil {
		t.Fatalf("ReloadCertificates: %v", err)
	}
	t.Run("old CA removed", func(t *testing.T) {
		tc, err := dialMQTTS(t, srv, oldDevice)
		refused(t, tc, err)
		nc, err := dialWSS(t, srv, oldDevice)
		refused(t, nc, err)
	})
	// Connected clients are not touched: the subscriber still gets messages.
	pub.pub(t, &paho.Publish{Topic: "ca/t", QoS: 1, Payload: []byte("still")})
	if m := sub.expect(t); string(m.Payload) != "still" {
		t.Fatalf("got %q", m.Payload)
	}
}
