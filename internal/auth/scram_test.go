package auth

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// RFC 7677 section 3: user "user", password "pencil".
const (
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

// rfcEntry is the password file entry of the RFC 7677 user.
func rfcEntry(t testing.TB) string {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	stored, server := SCRAMKeys([]byte("pencil"), salt, 4096)
	return "$scram-sha-256$4096$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(stored) + "$" + b64.EncodeToString(server)
}

// The server side replays RFC 7677's example exchange byte for byte.
// (Not parallel: it replaces the server nonce.)
func TestSCRAMRFC7677Vector(t *testing.T) {
	saved := serverNonce
	serverNonce = func() string { return rfcServerNonce }
	defer func() { serverNonce = saved }()

	dir := t.TempDir()
	a, _ := newAuth(t, Config{PasswordFile: writeFile(t, dir, "passwd", "user:"+rfcEntry(t)+"\n")})
	if m := a.AuthMethods(); len(m) != 1 || m[0] != MethodSCRAMSHA256 {
		t.Fatalf("AuthMethods = %v", m)
	}
	ctx := context.Background()
	ci := &broker.ConnectInfo{ClientID: "c", Version: packet.V5}
	step, err := a.StartAuth(ctx, ci, MethodSCRAMSHA256, []byte(rfcClientFirst))
	if err != nil || step.Next == nil {
		t.Fatalf("start: %+v %v", step, err)
	}
	if string(step.Data) != rfcServerFirst {
		t.Fatalf("server-first\n got %s\nwant %s", step.Data, rfcServerFirst)
	}
	final, err := step.Next(ctx, []byte(rfcClientFinal))
	if err != nil || final.Next != nil || final.Code != packet.Success || final.Identity.Username != "user" {
		t.Fatalf("final: %+v %v", final, err)
	}
	if string(final.Data) != rfcServerFinal {
		t.Fatalf("server-final\n got %s\nwant %s", final.Data, rfcServerFinal)
	}
	// The same entry also verifies a plain password.
	if id, code, _ := a.Authenticate(ctx, &broker.ConnectInfo{Username: "user", HasUsername: true, Password: []byte("pencil"), HasPassword: true}); code != packet.Success || id.Username != "user" {
		t.Fatalf("plain login with a SCRAM entry: %v", code)
	}
	if _, code, _ := a.Authenticate(ctx, &broker.ConnectInfo{Username: "user", HasUsername: true, Password: []byte("pencil2"), HasPassword: true}); code != packet.BadUsernameOrPassword {
		t.Fatalf("plain login, wrong password: %v", code)
	}

	// A tampered proof fails with 0x86.
	step, _ = a.StartAuth(ctx, ci, MethodSCRAMSHA256, []byte(rfcClientFirst))
	bad := strings.Replace(rfcClientFinal, "p=dHzb", "p=dHza", 1)
	if f, err := step.Next(ctx, []byte(bad)); err != nil || f.Code != packet.BadUsernameOrPassword {
		t.Fatalf("tampered proof: %+v %v", f, err)
	}
}

func TestSCRAMRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := "user:" + rfcEntry(t) + "\nargon:" + mustHash(t, "pencil") + "\n"
	a, logs := newAuth(t, Config{PasswordFile: writeFile(t, dir, "passwd", file)})
	ctx := context.Background()
	ci := &broker.ConnectInfo{ClientID: "c", Version: packet.V5}
	start := func(ci *broker.ConnectInfo, method, data string) broker.AuthStep {
		t.Helper()
		s, err := a.StartAuth(ctx, ci, method, []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := start(ci, "PLAIN", rfcClientFirst); s.Code != packet.BadAuthenticationMethod {
		t.Fatalf("other method: %v", s.Code)
	}
	for _, cf := range []string{"", "n,,", "p=tls-unique,,n=user,r=x", "n,a=other,n=user,r=x", "n,,n=user,r=x,m=ext", "n,,r=x,n=user", "n,,n=us=er,r=x"} {
		if s := start(ci, MethodSCRAMSHA256, cf); s.Next != nil || s.Code != packet.NotAuthorized {
			t.Errorf("client-first %q: %+v, want refused 0x87", cf, s)
		}
	}
	// CONNECT user name must be the SCRAM one.
	if s := start(&broker.ConnectInfo{Username: "other", HasUsername: true}, MethodSCRAMSHA256, rfcClientFirst); s.Code != packet.BadUsernameOrPassword {
		t.Fatalf("user mismatch: %v", s.Code)
	}
	// Unknown and argon2id users get a salt and fail only at the proof;
	// the made-up salt is stable per user name.
	for _, user := range []string{"nobody", "argon"} {
		s1 := start(ci, MethodSCRAMSHA256, "n,,n="+user+",r=abc")
		s2 := start(ci, MethodSCRAMSHA256, "n,,n="+user+",r=abc")
		if s1.Next == nil || !strings.Contains(string(s1.Data), ",i=4096") {
			t.Fatalf("%s: %+v", user, s1)
		}
		salt := func(d []byte) string { _, after, _ := strings.Cut(string(d), ",s="); return after }
		if salt(s1.Data) != salt(s2.Data) {
			t.Fatalf("%s: salt changes between attempts", user)
		}
		nonce := strings.TrimPrefix(strings.Split(string(s1.Data), ",")[0], "r=")
		f, err := s1.Next(ctx, []byte("c=biws,r="+nonce+",p="+base64.StdEncoding.EncodeToString(make([]byte, 32))))
		if err != nil || f.Code != packet.BadUsernameOrPassword {
			t.Fatalf("%s final: %+v %v", user, f, err)
		}
	}
	// Nonce and channel binding checks.
	s := start(ci, MethodSCRAMSHA256, rfcClientFirst)
	if f, _ := s.Next(ctx, []byte("c=biws,r=wrong,p="+base64.StdEncoding.EncodeToString(make([]byte, 32)))); f.Code != packet.NotAuthorized {
		t.Fatalf("wrong nonce: %v", f.Code)
	}
	if !strings.Contains(logs.String(), "no scram-sha-256 entry") {
		t.Fatalf("audit log does not explain the argon2id user's failure:\n%s", logs.String())
	}
	// Without a password file no method is offered.
	b, _ := newAuth(t, Config{AllowAnonymous: true})
	if m := b.AuthMethods(); len(m) != 0 {
		t.Fatalf("methods without a password file: %v", m)
	}
}

func TestParseSCRAMEntry(t *testing.T) {
	t.Parallel()
	h, err := HashSCRAM([]byte("pw"), MinSCRAMIterations)
	if err != nil {
		t.Fatal(err)
	}
	ph, err := parseHash(h)
	if err != nil || ph.scram == nil || !ph.verify([]byte("pw")) || ph.verify([]byte("px")) {
		t.Fatalf("round trip %s: %v", h, err)
	}
	if _, err := HashSCRAM([]byte("pw"), 100); err == nil {
		t.Fatal("100 iterations accepted")
	}
	parts := strings.Split(h, "$")
	for _, bad := range []string{
		"$scram-sha-256$4096$" + parts[3] + "$" + parts[4],
		"$scram-sha-256$100$" + parts[3] + "$" + parts[4] + "$" + parts[5],
		"$scram-sha-256$4096$AAAA$" + parts[4] + "$" + parts[5],
		"$scram-sha-256$4096$" + parts[3] + "$AAAA$" + parts[5],
		"$scram-sha-256$4096$" + parts[3] + "$" + parts[4] + "$!!",
	} {
		if _, err := parseHash(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
