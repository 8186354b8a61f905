package integration

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

func hmac256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// scramFinal computes the client-final-message for serverFirst and the
// server-final-message the broker must answer with.
func scramFinal(t *testing.T, bare, cnonce, serverFirst, password string) (final, serverFinal string) {
	t.Helper()
	var nonce, salt string
	iter := 0
	for _, kv := range strings.Split(serverFirst, ",") {
		switch {
		case strings.HasPrefix(kv, "r="):
			nonce = kv[2:]
		case strings.HasPrefix(kv, "s="):
			salt = kv[2:]
		case strings.HasPrefix(kv, "i="):
			iter, _ = strconv.Atoi(kv[2:])
		}
	}
	if !strings.HasPrefix(nonce, cnonce) || len(nonce) == len(cnonce) || iter < 4096 {
		t.Fatalf("bad server-first %q", serverFirst)
	}
	saltB, err := base64.StdEncoding.DecodeString(salt)
	if err != nil {
		t.Fatalf("salt: %v", err)
	}
	salted, _ := pbkdf2.Key(sha256.New, password, saltB, iter, 32)
	clientKey := hmac256(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	without := "c=biws,r=" + nonce
	authMsg := bare + "," + serverFirst + "," + without
	proof := hmac256(stored[:], authMsg)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	return without + ",p=" + base64.StdEncoding.EncodeToString(proof),
		"v=" + base64.StdEncoding.EncodeToString(hmac256(hmac256(salted, "Server Key"), authMsg))
}

// scramConnect runs the client side of SCRAM-SHA-256 (RFC 5802) over raw
// MQTT 5 packets and returns the CONNACK, and whether the server signature
// in it verified.
func scramConnect(t *testing.T, addr, user, password string) (*packet.Connack, bool) {
	t.Helper()
	_, ack, ok := scramConnectRaw(t, addr, user, password)
	return ack, ok
}

func scramConnectRaw(t *testing.T, addr, user, password string) (*testutil.Raw, *packet.Connack, bool) {
	t.Helper()
	r := testutil.Dial(t, addr, packet.V5)
	nb := make([]byte, 18)
	rand.Read(nb)
	cnonce := base64.StdEncoding.EncodeToString(nb)
	bare := "n=" + user + ",r=" + cnonce
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "scram-" + user, KeepAlive: 30,
		Properties: packet.Properties{AuthMethod: auth.MethodSCRAMSHA256, AuthData: []byte("n,," + bare)}})
	p := r.Read()
	if ack, ok := p.(*packet.Connack); ok {
		return r, ack, false
	}
	a, ok := p.(*packet.Auth)
	if !ok || a.ReasonCode != packet.ContinueAuthentication || a.Properties.AuthMethod != auth.MethodSCRAMSHA256 {
		t.Fatalf("want AUTH 0x18 SCRAM-SHA-256, got %#v", p)
	}
	final, want := scramFinal(t, bare, cnonce, string(a.Properties.AuthData), password)
	r.Send(&packet.Auth{ReasonCode: packet.ContinueAuthentication, Properties: packet.Properties{
		AuthMethod: auth.MethodSCRAMSHA256, AuthData: []byte(final)}})
	ack, ok := r.Read().(*packet.Connack)
	if !ok {
		t.Fatalf("want CONNACK after client-final")
	}
	return r, ack, ack.Properties.AuthMethod == auth.MethodSCRAMSHA256 && string(ack.Properties.AuthData) == want
}

// MQTT 5 enhanced authentication with SCRAM-SHA-256 against the real
// broker: right password in (and the server proves it knows the verifier),
// wrong password 0x86, argon2id users 0x86, unknown method 0x8C, and a
// mismatched method in AUTH is a protocol error.
func TestSCRAMEnhancedAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sh, err := auth.HashSCRAM([]byte("pencil"), auth.MinSCRAMIterations)
	if err != nil {
		t.Fatal(err)
	}
	ah, _ := auth.HashPassword([]byte("pencil"), auth.Argon2Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
	pw := filepath.Join(dir, "passwd")
	writeFile(t, pw, "sam:"+sh+"\nann:"+ah+"\n")
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Auth.AllowAnonymous = false
		c.Auth.PasswordFile = pw
	})

	ack, verified := scramConnect(t, addr, "sam", "pencil")
	if ack.ReasonCode != packet.Success || !verified {
		t.Fatalf("right password: CONNACK 0x%02x, server signature verified %v", byte(ack.ReasonCode), verified)
	}
	if ack, _ := scramConnect(t, addr, "sam", "wrong"); ack.ReasonCode != packet.BadUsernameOrPassword {
		t.Fatalf("wrong password: CONNACK 0x%02x, want 0x86", byte(ack.ReasonCode))
	}
	if ack, _ := scramConnect(t, addr, "ann", "pencil"); ack.ReasonCode != packet.BadUsernameOrPassword {
		t.Fatalf("argon2id user over SCRAM: CONNACK 0x%02x, want 0x86", byte(ack.ReasonCode))
	}
	if ack, _ := scramConnect(t, addr, "nobody", "pencil"); ack.ReasonCode != packet.BadUsernameOrPassword {
		t.Fatalf("unknown user: CONNACK 0x%02x, want 0x86", byte(ack.ReasonCode))
	}

	r := testutil.Dial(t, addr, packet.V5)
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "m", KeepAlive: 30,
		Properties: packet.Properties{AuthMethod: "SCRAM-SHA-1", AuthData: []byte("n,,n=sam,r=x")}})
	if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.BadAuthenticationMethod {
		t.Fatalf("unknown method: %#v, want CONNACK 0x8C", ack)
	}

	r = testutil.Dial(t, addr, packet.V5)
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "m2", KeepAlive: 30,
		Properties: packet.Properties{AuthMethod: auth.MethodSCRAMSHA256, AuthData: []byte("n,,n=sam,r=abc")}})
	if a, ok := r.Read().(*packet.Auth); !ok || a.ReasonCode != packet.ContinueAuthentication {
		t.Fatalf("want AUTH 0x18")
	}
	r.Send(&packet.Auth{ReasonCode: packet.ContinueAuthentication, Properties: packet.Properties{AuthMethod: "PLAIN", AuthData: []byte("x")}})
	if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.ProtocolError {
		t.Fatalf("AUTH with another method: %#v, want CONNACK 0x82", ack)
	}

	// Plain user name and password still work for both entries.
	if c, ack := dialV5(t, addr, "plain-sam", &paho.Connect{CleanStart: true, KeepAlive: 30,
		Username: "sam", UsernameFlag: true, Password: []byte("pencil"), PasswordFlag: true}); c == nil {
		t.Fatalf("plain login with a SCRAM entry: %+v", ack)
	}
}

// Re-authentication (AUTH 0x19) on a SCRAM connection: right password keeps
// the connection and ends with AUTH 0x00 and a verifiable server signature;
// a wrong one ends it with DISCONNECT 0x87.
func TestSCRAMReauthentication(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sh, _ := auth.HashSCRAM([]byte("pencil"), auth.MinSCRAMIterations)
	pw := filepath.Join(dir, "passwd")
	writeFile(t, pw, "sam:"+sh+"\n")
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Auth.AllowAnonymous = false
		c.Auth.PasswordFile = pw
	})
	r, ack, ok := scramConnectRaw(t, addr, "sam", "pencil")
	if ack.ReasonCode != packet.Success || !ok {
		t.Fatalf("connect: 0x%02x %v", byte(ack.ReasonCode), ok)
	}
	reauth := func(password string) packet.Packet {
		nb := make([]byte, 18)
		rand.Read(nb)
		cnonce := base64.StdEncoding.EncodeToString(nb)
		bare := "n=sam,r=" + cnonce
		r.Send(&packet.Auth{ReasonCode: packet.ReAuthenticate, Properties: packet.Properties{AuthMethod: auth.MethodSCRAMSHA256, AuthData: []byte("n,," + bare)}})
		a, isAuth := r.Read().(*packet.Auth)
		if !isAuth || a.ReasonCode != packet.ContinueAuthentication {
			t.Fatalf("want AUTH 0x18")
		}
		final, want := scramFinal(t, bare, cnonce, string(a.Properties.AuthData), password)
		r.Send(&packet.Auth{ReasonCode: packet.ContinueAuthentication, Properties: packet.Properties{AuthMethod: auth.MethodSCRAMSHA256, AuthData: []byte(final)}})
		p := r.Read()
		if a, isAuth := p.(*packet.Auth); isAuth && (a.ReasonCode != packet.Success || string(a.Properties.AuthData) != want) {
			t.Fatalf("re-auth end: %#v, want AUTH 0x00 with %s", a, want)
		}
		return p
	}
	if _, isAuth := reauth("pencil").(*packet.Auth); !isAuth {
		t.Fatal("re-authentication with the right password did not end with AUTH 0x00")
	}
	r.Send(&packet.Pingreq{})
	if _, isPong := r.Read().(*packet.Pingresp); !isPong {
		t.Fatal("connection unusable after re-authentication")
	}
	if d, isDisc := reauth("wrong").(*packet.Disconnect); !isDisc || d.ReasonCode != packet.NotAuthorized {
		t.Fatalf("wrong password re-auth: %#v, want DISCONNECT 0x87", d)
	}
}
