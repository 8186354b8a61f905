package integration

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// loginRaw connects a raw client with a user name and password and fails
// the test unless the CONNACK is a success.
func loginRaw(t *testing.T, r *testutil.Raw, id, user, pass string) {
	t.Helper()
	name := "MQTT"
	if r.Version == packet.V31 {
		name = "MQIsdp"
	}
	r.Send(&packet.Connect{ProtocolName: name, ProtocolVersion: r.Version, CleanStart: true, KeepAlive: 60, ClientID: id,
		Username: user, HasUsername: true, Password: []byte(pass), HasPassword: true})
	if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.Success {
		t.Fatalf("%s: CONNACK %+v, want success", id, ack)
	}
}

// stillServed checks that a client can still publish at QoS 1.
func stillServed(t *testing.T, r *testutil.Raw) {
	t.Helper()
	r.Send(&packet.Publish{Topic: "revoke/alive", QoS: 1, PacketID: 7, Payload: []byte("x")})
	if a, ok := r.Read().(*packet.Ack); !ok || a.PacketID != 7 || a.ReasonCode != packet.Success && a.ReasonCode != packet.NoMatchingSubscribers {
		t.Fatalf("publish after the reload: %+v, want PUBACK 0x00", a)
	}
}

// After a reload of the password file, connected clients whose user was
// deleted or whose password hash changed are disconnected (MQTT 5:
// DISCONNECT 0x87; 3.1.1: closed) and cannot log in again with the old
// password; the others keep their connection.
func TestAuthReloadRevokes(t *testing.T) {
	t.Parallel()
	hash := func(pw string) string {
		h, err := auth.HashPassword([]byte(pw), fastArgon2)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	carolHash, daveHash := hash("carol-pw"), hash("dave-pw")
	file := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, file, "alice:"+hash("alice-pw")+"\nbob:"+hash("bob-pw")+"\ncarol:"+carolHash+"\ndave:"+daveHash+"\n")
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Auth.AllowAnonymous = false
		c.Auth.PasswordFile = file
	})
	alice := testutil.Dial(t, addr, packet.V5) // deleted
	loginRaw(t, alice, "alice-1", "alice", "alice-pw")
	bob := testutil.Dial(t, addr, packet.V5) // password changed
	loginRaw(t, bob, "bob-1", "bob", "bob-pw")
	carol := testutil.Dial(t, addr, packet.V311) // deleted, 3.1.1
	loginRaw(t, carol, "carol-1", "carol", "carol-pw")
	dave := testutil.Dial(t, addr, packet.V5) // unchanged
	loginRaw(t, dave, "dave-1", "dave", "dave-pw")

	writeFile(t, file, "bob:"+hash("bob-new")+"\ndave:"+daveHash+"\n")
	if err := srv.ReloadAuth(); err != nil {
		t.Fatal(err)
	}
	alice.ExpectClosed(packet.NotAuthorized)
	bob.ExpectClosed(packet.NotAuthorized)
	carol.ExpectClosed(0)
	stillServed(t, dave)

	again := testutil.Dial(t, addr, packet.V5)
	again.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, KeepAlive: 60, ClientID: "bob-2",
		Username: "bob", HasUsername: true, Password: []byte("bob-pw"), HasPassword: true})
	if ack, ok := again.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.BadUsernameOrPassword {
		t.Fatalf("bob with the old password: %+v, want CONNACK 0x86", ack)
	}
}

// After the client certificate authorities are reloaded, a client named by
// a certificate that no longer chains to them is disconnected with 0x87.
func TestCertReloadRevokes(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	caFile := filepath.Join(t.TempDir(), "client-ca.pem")
	ca, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, caFile, string(ca))
	srv := startTLSBroker(t, pki, func(c *starling.Config) {
		c.Store = "memory"
		c.TLS.ClientAuth = "optional"
		c.TLS.ClientCAFile = caFile
		c.Auth.AllowAnonymous = false
		c.Auth.CertUsername = "cn"
	})
	nc, err := dialMQTTS(t, srv, pki.ClientConfig(pki.ClientCert("sensor-1")))
	if err != nil {
		t.Fatal(err)
	}
	dev := testutil.NewRaw(t, nc, packet.V5)
	if ack := dev.Connect("sensor-1", true); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK %+v", ack)
	}
	stillServed(t, dev)
	// Unchanged authorities: nobody is disconnected.
	if err := srv.ReloadCertificates(); err != nil {
		t.Fatal(err)
	}
	stillServed(t, dev)

	other, err := os.ReadFile(newTestPKI(t).CAFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, caFile, string(other))
	if err := srv.ReloadCertificates(); err != nil {
		t.Fatal(err)
	}
	dev.ExpectClosed(packet.NotAuthorized)
}
