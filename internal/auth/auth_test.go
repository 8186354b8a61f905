package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// fastArgon keeps tests quick; production hashes use DefaultArgon2.
var fastArgon = Argon2Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func mustHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := HashPassword([]byte(pw), fastArgon)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustBcrypt(t testing.TB, pw, prefix string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return prefix + string(h[4:])
}

func writeFile(t testing.TB, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

func newAuth(t testing.TB, cfg Config) (*Auth, *logBuf) {
	t.Helper()
	log, lb := newLogger()
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return a, lb
}

var remote = &net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 40000}

func login(user, pw string) *broker.ConnectInfo {
	return &broker.ConnectInfo{ClientID: "c1", Username: user, HasUsername: true, Password: []byte(pw),
		HasPassword: true, Version: 5, Remote: remote}
}

func TestPasswords(t *testing.T) {
	dir := t.TempDir()
	pf := writeFile(t, dir, "passwd", strings.Join([]string{
		"# comment",
		"",
		"alice:" + mustHash(t, "wonderland"),
		"  bob:" + mustBcrypt(t, "builder", "$2a$") + "  ",
		"carol:" + mustBcrypt(t, "singer", "$2b$"),
		"dave:" + mustBcrypt(t, "pilot", "$2y$"),
		"Jane Doe:" + mustHash(t, "x"),
		"root:" + mustHash(t, "toor"),
	}, "\n"))
	a, lb := newAuth(t, Config{PasswordFile: pf, AllowAnonymous: false, Superusers: []string{"root"}})
	tests := []struct {
		name string
		ci   *broker.ConnectInfo
		code packet.ReasonCode
		id   broker.Identity
	}{
		{"argon2id", login("alice", "wonderland"), packet.Success, broker.Identity{Username: "alice"}},
		{"bcrypt 2a", login("bob", "builder"), packet.Success, broker.Identity{Username: "bob"}},
		{"bcrypt 2b", login("carol", "singer"), packet.Success, broker.Identity{Username: "carol"}},
		{"bcrypt 2y", login("dave", "pilot"), packet.Success, broker.Identity{Username: "dave"}},
		{"space in name", login("Jane Doe", "x"), packet.Success, broker.Identity{Username: "Jane Doe"}},
		{"superuser", login("root", "toor"), packet.Success, broker.Identity{Username: "root", Superuser: true}},
		{"argon2id wrong", login("alice", "Wonderland"), packet.BadUsernameOrPassword, broker.Identity{}},
		{"bcrypt wrong", login("bob", "builde"), packet.BadUsernameOrPassword, broker.Identity{}},
		{"empty password", login("alice", ""), packet.BadUsernameOrPassword, broker.Identity{}},
		{"unknown user", login("mallory", "wonderland"), packet.BadUsernameOrPassword, broker.Identity{}},
		{"no password", &broker.ConnectInfo{ClientID: "c", Username: "alice", HasUsername: true}, packet.BadUsernameOrPassword, broker.Identity{}},
		{"anonymous off", &broker.ConnectInfo{ClientID: "c"}, packet.NotAuthorized, broker.Identity{}},
		{"password without user name", &broker.ConnectInfo{ClientID: "c", Password: []byte("wonderland"), HasPassword: true}, packet.NotAuthorized, broker.Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, code, err := a.Authenticate(context.Background(), tt.ci)
			if (code == packet.Success) != (id.Credential != nil) {
				t.Fatalf("credential %+v with code 0x%02X: want one exactly for a password login", id.Credential, code)
			}
			id.Credential = nil // what was checked; see TestStillValid
			if err != nil || code != tt.code || id != tt.id {
				t.Fatalf("got %+v 0x%02X %v, want %+v 0x%02X", id, code, err, tt.id, tt.code)
			}
		})
	}
	out := lb.String()
	for _, want := range []string{`msg="login failed" client_id=c1 username=mallory remote=192.0.2.9:40000 reason="unknown user"`,
		`reason="wrong password"`, `reason="anonymous access is off"`} {
		if !strings.Contains(out, want) {
			t.Errorf("audit log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "wonderland") {
		t.Error("a password reached the log")
	}
}

// onListener is a copy of c arriving on the named listener.
func onListener(c *broker.ConnectInfo, name string) *broker.ConnectInfo {
	cp := *c
	cp.Listener = name
	return &cp
}

func TestAnonymous(t *testing.T) {
	dir := t.TempDir()
	pf := writeFile(t, dir, "passwd", "alice:"+mustHash(t, "pw")+"\n")
	anon := &broker.ConnectInfo{ClientID: "c"}
	named := login("someone", "pw")
	for _, tt := range []struct {
		name      string
		cfg       Config
		ci        *broker.ConnectInfo
		code      packet.ReasonCode
		anonymous bool
	}{
		{"default allows anonymous", DefaultConfig(), anon, packet.Success, true},
		{"unverifiable name is anonymous", DefaultConfig(), named, packet.Success, true},
		{"off", Config{AllowAnonymous: false, PasswordFile: pf}, anon, packet.NotAuthorized, false},
		{"on with password file", Config{AllowAnonymous: true, PasswordFile: pf}, anon, packet.Success, true},
		{"on with password file, bad name still refused", Config{AllowAnonymous: true, PasswordFile: pf}, named, packet.BadUsernameOrPassword, false},
		{"off, certs only, a name is refused", Config{AllowAnonymous: false, CertUsername: "cn"}, named, packet.BadUsernameOrPassword, false},
		{"off, on for this listener", Config{PasswordFile: pf, AnonymousListeners: []string{"tcp"}}, onListener(anon, "tcp"), packet.Success, true},
		{"off, on for another listener", Config{PasswordFile: pf, AnonymousListeners: []string{"tcp"}}, onListener(anon, "mqtts"), packet.NotAuthorized, false},
		{"off, on for tcp, direct connection", Config{PasswordFile: pf, AnonymousListeners: []string{"tcp"}}, anon, packet.NotAuthorized, false},
		{"on for this listener, a wrong password is still refused", Config{PasswordFile: pf, AnonymousListeners: []string{"tcp"}}, onListener(named, "tcp"), packet.BadUsernameOrPassword, false},
		{"on for this listener only: an unverifiable name", Config{CertUsername: "cn", AnonymousListeners: []string{"http"}}, onListener(named, "http"), packet.Success, true},
		{"on for another listener only: an unverifiable name", Config{CertUsername: "cn", AnonymousListeners: []string{"http"}}, onListener(named, "https"), packet.BadUsernameOrPassword, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := newAuth(t, tt.cfg)
			id, code, err := a.Authenticate(context.Background(), tt.ci)
			if err != nil || code != tt.code || id.Anonymous != tt.anonymous {
				t.Fatalf("got %+v 0x%02X %v", id, code, err)
			}
			if id.Anonymous && id.Username != "" {
				t.Fatalf("anonymous identity keeps unverified name %q", id.Username)
			}
		})
	}
}

func TestCertMapping(t *testing.T) {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "device-42"},
		EmailAddresses: []string{"ops@example.com", "x@example.com"}, DNSNames: []string{"dev42.example.com"}}
	verified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}
	unverified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	badCN := &x509.Certificate{Subject: pkix.Name{CommonName: "a:b"}}
	badState := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{badCN}, VerifiedChains: [][]*x509.Certificate{{badCN}}}
	ci := func(st *tls.ConnectionState, user string) *broker.ConnectInfo {
		c := &broker.ConnectInfo{ClientID: "c", TLS: st, Remote: remote}
		if user != "" {
			c.Username, c.HasUsername, c.Password, c.HasPassword = user, true, []byte("nope"), true
		}
		return c
	}
	for _, tt := range []struct {
		name, mapping string
		ci            *broker.ConnectInfo
		user          string
		code          packet.ReasonCode
	}{
		{"cn", "cn", ci(verified, ""), "device-42", packet.Success},
		{"san_email", "san_email", ci(verified, ""), "ops@example.com", packet.Success},
		{"san_dns", "san_dns", ci(verified, ""), "dev42.example.com", packet.Success},
		{"cert wins over CONNECT name", "cn", ci(verified, "admin"), "device-42", packet.Success},
		{"superuser by cert", "san_dns", ci(verified, ""), "dev42.example.com", packet.Success},
		{"unverified chain ignored", "cn", ci(unverified, ""), "", packet.NotAuthorized},
		{"off ignores cert", "off", ci(verified, ""), "", packet.NotAuthorized},
		{"no TLS", "cn", ci(nil, ""), "", packet.NotAuthorized},
		{"unusable name falls through", "cn", ci(badState, ""), "", packet.NotAuthorized},
		{"unverified, password checked", "cn", ci(unverified, "admin"), "", packet.BadUsernameOrPassword},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pf := writeFile(t, dir, "passwd", "admin:"+mustHash(t, "secret")+"\n")
			a, _ := newAuth(t, Config{CertUsername: tt.mapping, PasswordFile: pf, Superusers: []string{"dev42.example.com"}})
			id, code, err := a.Authenticate(context.Background(), tt.ci)
			if err != nil || code != tt.code || id.Username != tt.user {
				t.Fatalf("got %+v 0x%02X %v, want user %q 0x%02X", id, code, err, tt.user, tt.code)
			}
			if code == packet.Success && (id.Anonymous || id.Superuser != (tt.user == "dev42.example.com")) {
				t.Fatalf("identity %+v", id)
			}
		})
	}
}

func TestVerificationSemaphore(t *testing.T) {
	dir := t.TempDir()
	pf := writeFile(t, dir, "passwd", "alice:"+mustHash(t, "pw")+"\n")
	a, lb := newAuth(t, Config{AllowAnonymous: true, PasswordFile: pf, MaxConcurrentVerifications: 2})
	if cap(a.sem) != 2 {
		t.Fatalf("semaphore of %d", cap(a.sem))
	}
	a.sem <- struct{}{} // two verifications in progress
	a.sem <- struct{}{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, code, err := a.Authenticate(ctx, login("alice", "pw"))
	refused := time.Now()
	if err != nil || code != packet.ServerBusy {
		t.Fatalf("saturated: 0x%02X %v, want 0x89", code, err)
	}
	// Compared with the deadline itself, not a duration from a start
	// taken after it: a slow run may reach Authenticate past it.
	if dl, _ := ctx.Deadline(); refused.Before(dl) {
		t.Fatalf("refused %v before the deadline, without waiting for it", dl.Sub(refused))
	}
	if !strings.Contains(lb.String(), "too many concurrent password verifications") {
		t.Error("busy refusal not audited")
	}
	// Anonymous and certificate logins need no slot.
	if _, code, _ := a.Authenticate(ctx, &broker.ConnectInfo{ClientID: "x"}); code != packet.Success {
		t.Fatalf("anonymous while saturated: 0x%02X", code)
	}
	// A waiting client gets the slot when one frees before its deadline.
	done := make(chan packet.ReasonCode)
	go func() {
		_, code, _ := a.Authenticate(context.Background(), login("alice", "pw"))
		done <- code
	}()
	time.Sleep(20 * time.Millisecond)
	<-a.sem
	if code := <-done; code != packet.Success {
		t.Fatalf("after a slot freed: 0x%02X", code)
	}
	<-a.sem
	if len(a.sem) != 0 {
		t.Fatal("slot leaked")
	}
	if cap(mustNew(t, Config{AllowAnonymous: true}).sem) < 2 {
		t.Fatal("default semaphore below 2")
	}
}

func mustNew(t *testing.T, cfg Config) *Auth {
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestConcurrentLogins(t *testing.T) {
	dir := t.TempDir()
	pf := writeFile(t, dir, "passwd", "alice:"+mustHash(t, "pw")+"\n")
	a, _ := newAuth(t, Config{PasswordFile: pf, MaxConcurrentVerifications: 3})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw := "pw"
			if i%2 == 1 {
				pw = "bad"
			}
			_, code, _ := a.Authenticate(context.Background(), login("alice", pw))
			if (code == packet.Success) != (i%2 == 0) {
				t.Errorf("login %d: 0x%02X", i, code)
			}
		}()
	}
	wg.Wait()
}

// TestUnknownUserCostsAHash checks that an unknown user is not answered
// faster than a known one (no user enumeration by timing).
// An unknown user costs one hash like a known one (no user enumeration by
// timing): the state keeps a real hash of the file's cost to verify
// against. Checked structurally, not by the clock, so a busy machine cannot
// make it flaky.
func TestUnknownUserCostsAHash(t *testing.T) {
	dir := t.TempDir()
	params := Argon2Params{Memory: 4 * 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, err := HashPassword([]byte("pw"), params)
	if err != nil {
		t.Fatal(err)
	}
	pf := writeFile(t, dir, "passwd", "alice:"+h+"\n")
	a, _ := newAuth(t, Config{PasswordFile: pf})
	st := a.state.Load()
	if st.dummy == nil || st.dummy.argon == nil || st.dummy.argon.p != params {
		t.Fatalf("no stand-in hash with the file's cost for unknown users: %+v", st.dummy)
	}
	if _, code, _ := a.Authenticate(context.Background(), login("nobody", "pw")); code != packet.BadUsernameOrPassword {
		t.Fatalf("unknown user: 0x%02x, want 0x86", byte(code))
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	err := Config{CertUsername: "uid", MaxConcurrentVerifications: -1, AuditLinesPerSecond: -1,
		Superusers: []string{"ok", "a:b"}}.Validate()
	for _, key := range []string{"auth.cert_username:", "auth.max_concurrent_verifications:",
		"auth.audit_lines_per_second:", "auth.superusers[1]:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error lacks %s: %v", key, err)
		}
	}
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "auth.allow_anonymous:") {
		t.Errorf("a config letting nobody in: %v", err)
	}
	if err := (Config{CertUsername: "cn"}).Validate(); err != nil {
		t.Errorf("certificates only: %v", err)
	}
	if err := (Config{AnonymousListeners: []string{"tcp"}}).Validate(); err != nil {
		t.Errorf("anonymous on one listener only: %v", err)
	}
	for cfg, key := range map[*Config]string{
		{AllowAnonymous: true, AnonymousListeners: []string{"tcp"}}:                          "auth.anonymous_listeners: set while allow_anonymous is true",
		{AnonymousListeners: []string{"tcp", "mqtt"}}:                                        "auth.anonymous_listeners[1]: must be one of",
		{AnonymousListeners: []string{"http", "http"}, PasswordFile: "/etc/starling/passwd"}: "auth.anonymous_listeners[1]: http is listed twice",
	} {
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%+v: error %v, want %q", cfg, err, key)
		}
	}
	if _, err := New(Config{AllowAnonymous: true, PasswordFile: "/nonexistent/passwd"}, nil); err == nil ||
		!strings.Contains(err.Error(), "auth.password_file") {
		t.Errorf("missing password file: %v", err)
	}
	if _, err := New(Config{AllowAnonymous: true, ACLFile: "/nonexistent/acl"}, nil); err == nil ||
		!strings.Contains(err.Error(), "auth.acl_file") {
		t.Errorf("missing acl file: %v", err)
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	pf := writeFile(t, dir, "passwd", "alice:"+mustHash(t, "old")+"\n")
	af := writeFile(t, dir, "acl", "allow all user alice a/#\n")
	a, lb := newAuth(t, Config{PasswordFile: pf, ACLFile: af})
	alice := &broker.ClientInfo{ClientID: "c", Identity: broker.Identity{Username: "alice"}}
	if !a.Allow(alice, broker.ActRead, "a/1") || a.Allow(alice, broker.ActRead, "b/1") {
		t.Fatal("initial rules")
	}
	// Changed files: new password, new rules, for existing clients too.
	writeFile(t, dir, "passwd", "alice:"+mustHash(t, "new")+"\n")
	writeFile(t, dir, "acl", "allow all user alice b/#\n")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if a.Allow(alice, broker.ActRead, "a/1") || !a.Allow(alice, broker.ActRead, "b/1") {
		t.Fatal("reloaded rules not applied")
	}
	if _, code, _ := a.Authenticate(context.Background(), login("alice", "new")); code != packet.Success {
		t.Fatal("new password refused")
	}
	if _, code, _ := a.Authenticate(context.Background(), login("alice", "old")); code == packet.Success {
		t.Fatal("old password accepted")
	}
	if !strings.Contains(lb.String(), `msg="auth reloaded" users=1 acl_rules=1`) {
		t.Errorf("reload not logged:\n%s", lb.String())
	}
	// Broken ACL: error, old rules and passwords kept.
	writeFile(t, dir, "passwd", "alice:"+mustHash(t, "newer")+"\n")
	writeFile(t, dir, "acl", "allow all user alice c/#\nallow everything\n")
	err := a.Reload()
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("broken acl: %v", err)
	}
	if !a.Allow(alice, broker.ActRead, "b/1") || a.Allow(alice, broker.ActRead, "c/1") {
		t.Fatal("broken reload changed the rules")
	}
	if _, code, _ := a.Authenticate(context.Background(), login("alice", "new")); code != packet.Success {
		t.Fatal("broken reload changed the passwords")
	}
	// Broken password file: same.
	writeFile(t, dir, "acl", "allow all user alice c/#\n")
	writeFile(t, dir, "passwd", "alice:$argon2id$v=19$m=64,t=1,p=1$short$x\n")
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("broken password file: %v", err)
	}
	if !a.Allow(alice, broker.ActRead, "b/1") || a.Allow(alice, broker.ActRead, "c/1") {
		t.Fatal("broken password file changed the rules")
	}
	// Missing file: same.
	os.Remove(af)
	if err := a.Reload(); err == nil {
		t.Fatal("missing acl file reloaded")
	}
	if !a.Allow(alice, broker.ActRead, "b/1") {
		t.Fatal("missing file changed the rules")
	}
}

func TestReloadConcurrent(t *testing.T) {
	dir := t.TempDir()
	af := writeFile(t, dir, "acl", "allow all any #\n")
	a, _ := newAuth(t, Config{AllowAnonymous: true, ACLFile: af})
	c := &broker.ClientInfo{ClientID: "c", Identity: broker.Identity{Anonymous: true}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					a.Allow(c, broker.ActRead, "x/y")
				}
			}
		}()
	}
	for range 50 {
		if err := a.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestAuditRateLimit(t *testing.T) {
	dir := t.TempDir()
	af := writeFile(t, dir, "acl", "allow all user alice #\n")
	a, lb := newAuth(t, Config{AllowAnonymous: true, ACLFile: af, AuditLinesPerSecond: 5})
	a.audit.Interval = 30 * time.Millisecond
	c := &broker.ClientInfo{ClientID: "evil", Identity: broker.Identity{Username: "eve"}, Remote: "198.51.100.7:1234"}
	for range 1000 {
		a.Allow(c, broker.ActPublish, "secret")
	}
	out := lb.String()
	if n := strings.Count(out, "access denied"); n != 5 {
		t.Fatalf("%d denial lines, want the burst of 5", n)
	}
	if !strings.Contains(out, `msg="access denied" client_id=evil username=eve remote=198.51.100.7:1234 action=publish topic=secret acl_line=0`) {
		t.Errorf("denial line:\n%s", out)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(lb.String(), `msg="audit lines suppressed" count=995`) {
		if time.Now().After(deadline) {
			t.Fatalf("no suppression summary:\n%s", lb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Suppressed lines allocate nothing.
	if n := testing.AllocsPerRun(100, func() { a.Allow(c, broker.ActPublish, "secret") }); n != 0 {
		t.Errorf("suppressed denial allocates %v", n)
	}
}
