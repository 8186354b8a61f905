package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/testcert"
)

// testCA is a certificate authority made in the test.
type testCA struct {
	tls.Certificate
	pem []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	c := testcert.Issue(t, name, nil, false)
	return &testCA{c, testcert.CertPEM(c)}
}

// issue returns a PEM certificate and key signed by ca: a server
// certificate for 127.0.0.1 when server, else a client certificate.
func (ca *testCA) issue(t *testing.T, cn string, serial int64, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	c := testcert.IssueSerial(t, cn, serial, &ca.Certificate, server)
	return testcert.CertPEM(c), testcert.KeyPEM(t, c)
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Leaf)
	return p
}

func (ca *testCA) clientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	return testcert.IssueSerial(t, cn, 100, &ca.Certificate, false)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serverFiles writes a server certificate with the given serial and its key
// into dir and returns their paths.
func serverFiles(t *testing.T, ca *testCA, dir string, serial int64) (certFile, keyFile string) {
	t.Helper()
	c, k := ca.issue(t, "server", serial, true)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, c)
	writeFile(t, keyFile, k)
	return certFile, keyFile
}

// handshake runs a TLS handshake over an in-memory pipe and returns the
// server's certificate serial as the client saw it, and each side's error.
// The client's error includes a refusal the server sends after the client
// finished its side of a TLS 1.3 handshake.
func handshake(t *testing.T, server, client *tls.Config) (serial int64, serverErr, clientErr error) {
	t.Helper()
	a, b := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	sc, cc := tls.Server(a, server), tls.Client(b, client)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer a.Close() // not sc.Close: its close_notify would wait for a reader
		if serverErr = sc.Handshake(); serverErr == nil {
			_, serverErr = sc.Write([]byte("k"))
		}
	}()
	defer func() {
		b.Close()
		wg.Wait()
	}()
	if clientErr = cc.Handshake(); clientErr != nil {
		return 0, serverErr, clientErr
	}
	buf := make([]byte, 1)
	if _, clientErr = cc.Read(buf); clientErr != nil {
		return 0, serverErr, clientErr
	}
	return cc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), serverErr, nil
}

func clientConfig(ca *testCA) *tls.Config {
	return &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"}
}

func TestCertReloaderServesAndReloads(t *testing.T) {
	ca := newTestCA(t, "ca")
	dir := t.TempDir()
	certFile, keyFile := serverFiles(t, ca, dir, 1)
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerTLSConfig(r, "", "off")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	if serial, _, err := handshake(t, cfg, clientConfig(ca)); err != nil || serial != 1 {
		t.Fatalf("handshake: serial %d, %v; want 1", serial, err)
	}

	serverFiles(t, ca, dir, 2)
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if serial, _, err := handshake(t, cfg, clientConfig(ca)); err != nil || serial != 2 {
		t.Fatalf("after Reload: serial %d, %v; want 2", serial, err)
	}

	// A broken file: Reload fails and the old certificate stays.
	writeFile(t, certFile, []byte("not a certificate"))
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("Reload of a broken file = %v, want an error naming %s", err, certFile)
	}
	if serial, _, err := handshake(t, cfg, clientConfig(ca)); err != nil || serial != 2 {
		t.Fatalf("after failed Reload: serial %d, %v; want 2 (kept)", serial, err)
	}
	// A key that does not match the certificate: refused too.
	c3, _ := ca.issue(t, "server", 3, true)
	writeFile(t, certFile, c3)
	if err := r.Reload(); err == nil {
		t.Fatal("Reload with a mismatched key succeeded")
	}
	if got := r.Certificate().Leaf.SerialNumber.Int64(); got != 2 {
		t.Fatalf("Certificate() serial %d, want 2", got)
	}
}

func TestNewCertReloaderErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewCertReloader(filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing files: %v, want os.ErrNotExist", err)
	}
	if _, err := ServerTLSConfig(nil, "", "off"); err == nil {
		t.Error("ServerTLSConfig(nil) succeeded")
	}
}

// The reloader notices changed files during a handshake, at most once a
// second, and keeps the old certificate when the new files are broken.
func TestCertReloaderWatchesFiles(t *testing.T) {
	ca := newTestCA(t, "ca")
	dir := t.TempDir()
	certFile, keyFile := serverFiles(t, ca, dir, 1)
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := time.Now()
	r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	var reloads []error
	r.OnReload = func(err error) { reloads = append(reloads, err) }
	cfg, err := ServerTLSConfig(r, "", "")
	if err != nil {
		t.Fatal(err)
	}
	serialNow := func() int64 {
		t.Helper()
		serial, _, err := handshake(t, cfg, clientConfig(ca))
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return serial
	}
	// touch gives both files a new modification time, so the test does not
	// depend on the file system's timestamp resolution.
	touch := func(at time.Time) {
		for _, f := range []string{certFile, keyFile} {
			if err := os.Chtimes(f, at, at); err != nil {
				t.Fatal(err)
			}
		}
	}

	serverFiles(t, ca, dir, 2)
	touch(time.Now().Add(time.Minute))
	if got := serialNow(); got != 1 {
		t.Fatalf("within a second of loading: serial %d, want 1 (not looked at yet)", got)
	}
	advance(1100 * time.Millisecond)
	if got := serialNow(); got != 2 {
		t.Fatalf("a second later: serial %d, want 2", got)
	}
	if len(reloads) != 1 || reloads[0] != nil {
		t.Fatalf("OnReload calls: %v, want one nil", reloads)
	}
	advance(1100 * time.Millisecond)
	serialNow()
	if len(reloads) != 1 {
		t.Fatalf("unchanged files reloaded: %v", reloads)
	}

	// Half-written: a new certificate whose key is not there yet.
	c3, k3 := ca.issue(t, "server", 3, true)
	writeFile(t, certFile, c3)
	touch(time.Now().Add(2 * time.Minute))
	advance(1100 * time.Millisecond)
	if got := serialNow(); got != 2 {
		t.Fatalf("with a mismatched key: serial %d, want 2 (kept)", got)
	}
	if len(reloads) != 2 || reloads[1] == nil {
		t.Fatalf("OnReload calls: %v, want a second one with an error", reloads)
	}
	// The key arrives: the next look loads both.
	writeFile(t, keyFile, k3)
	if err := os.Chtimes(keyFile, time.Now().Add(3*time.Minute), time.Now().Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	advance(1100 * time.Millisecond)
	if got := serialNow(); got != 3 {
		t.Fatalf("with the key in place: serial %d, want 3", got)
	}
}

func TestServerTLSConfigClientAuth(t *testing.T) {
	ca := newTestCA(t, "ca")
	clientCA := newTestCA(t, "client ca")
	otherCA := newTestCA(t, "other ca")
	dir := t.TempDir()
	certFile, keyFile := serverFiles(t, ca, dir, 1)
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "clients.pem")
	writeFile(t, caFile, clientCA.pem)
	good := clientCA.clientCert(t, "device-1")
	forged := otherCA.clientCert(t, "device-1")

	tests := []struct {
		mode   string
		client *tls.Certificate // nil: none
		ok     bool
	}{
		{"off", nil, true},
		{"off", &good, true}, // not asked for, so not sent
		{"optional", nil, true},
		{"optional", &good, true},
		{"optional", &forged, false},
		{"required", nil, false},
		{"required", &good, true},
		{"required", &forged, false},
	}
	for _, tt := range tests {
		name := tt.mode + "/none"
		if tt.client == &good {
			name = tt.mode + "/good"
		} else if tt.client == &forged {
			name = tt.mode + "/other-ca"
		}
		t.Run(name, func(t *testing.T) {
			cfg, err := ServerTLSConfig(r, caFile, tt.mode)
			if err != nil {
				t.Fatal(err)
			}
			cc := clientConfig(ca)
			if c := tt.client; c != nil {
				// Sent whatever CAs the server names (Go's client would
				// otherwise keep a certificate from another CA to itself).
				cc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
			}
			var seen *x509.Certificate
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) > 0 {
					seen = cs.PeerCertificates[0]
				}
				return nil
			}
			_, serr, cerr := handshake(t, cfg, cc)
			if tt.ok && (serr != nil || cerr != nil) {
				t.Fatalf("refused: server %v, client %v", serr, cerr)
			}
			if !tt.ok && (serr == nil || cerr == nil) {
				t.Fatalf("accepted: server %v, client %v", serr, cerr)
			}
			if tt.ok && tt.client != nil && tt.mode != "off" && (seen == nil || seen.Subject.CommonName != "device-1") {
				t.Fatalf("server saw client certificate %v, want CN device-1", seen)
			}
		})
	}
}

func TestServerTLSConfigRefusesOldTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	certFile, keyFile := serverFiles(t, ca, t.TempDir(), 1)
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerTLSConfig(r, "", "off")
	if err != nil {
		t.Fatal(err)
	}
	cc := clientConfig(ca)
	cc.MinVersion, cc.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, serr, _ := handshake(t, cfg, cc); serr == nil {
		t.Fatal("a TLS 1.1 client was accepted")
	}
}

func TestServerTLSConfigErrors(t *testing.T) {
	ca := newTestCA(t, "ca")
	dir := t.TempDir()
	certFile, keyFile := serverFiles(t, ca, dir, 1)
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	writeFile(t, empty, []byte("no pem here\n"))
	for _, tt := range []struct{ ca, mode, want string }{
		{"", "sometimes", `must be off, optional or required (got "sometimes")`},
		{"", "required", "needs a client CA file"},
		{"", "optional", "needs a client CA file"},
		{filepath.Join(dir, "missing.pem"), "required", "missing.pem"},
		{empty, "optional", "no PEM certificate found"},
	} {
		if _, err := ServerTLSConfig(r, tt.ca, tt.mode); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ServerTLSConfig(%q, %q) = %v, want an error containing %q", tt.ca, tt.mode, err, tt.want)
		}
	}
}

// The client CA file is reloaded with the certificate: a client certificate
// from a new CA is refused before Reload and accepted after, and one from a
// CA no longer listed is refused; a clone passed to ServeReloadedClientCAs
// keeps its own settings (ALPN here) after the change; a change of the CA
// file alone is picked up by a handshake, like a change of the certificate.
func TestServerTLSConfigReloadsClientCAs(t *testing.T) {
	ca := newTestCA(t, "ca")
	oldCA := newTestCA(t, "old client ca")
	newCA := newTestCA(t, "new client ca")
	dir := t.TempDir()
	certFile, keyFile := serverFiles(t, ca, dir, 1)
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := time.Now()
	r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	caFile := filepath.Join(dir, "clients.pem")
	writeFile(t, caFile, oldCA.pem)
	cfg, err := ServerTLSConfig(r, caFile, ClientAuthRequired)
	if err != nil {
		t.Fatal(err)
	}
	wsCfg := cfg.Clone()
	wsCfg.NextProtos = []string{"http/1.1"}
	ServeReloadedClientCAs(wsCfg, r)

	oldCert, newCert := oldCA.clientCert(t, "old-device"), newCA.clientCert(t, "new-device")
	try := func(server *tls.Config, c *tls.Certificate) (proto string, err error) {
		t.Helper()
		cc := clientConfig(ca)
		cc.NextProtos = []string{"h2", "http/1.1"}
		cc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
		cc.VerifyConnection = func(cs tls.ConnectionState) error { proto = cs.NegotiatedProtocol; return nil }
		_, serr, cerr := handshake(t, server, cc)
		if serr != nil {
			return proto, serr
		}
		return proto, cerr
	}
	expect := func(stage string, c *tls.Certificate, ok bool) {
		t.Helper()
		for _, server := range []*tls.Config{cfg, wsCfg} {
			proto, err := try(server, c)
			if ok && err != nil {
				t.Fatalf("%s: %s refused: %v", stage, c.Leaf.Subject.CommonName, err)
			}
			if !ok && err == nil {
				t.Fatalf("%s: %s accepted", stage, c.Leaf.Subject.CommonName)
			}
			if ok && server == wsCfg && proto != "http/1.1" {
				t.Fatalf("%s: clone negotiated %q, want http/1.1", stage, proto)
			}
		}
	}
	for _, c := range []*tls.Certificate{&oldCert, &newCert} {
		if c.Leaf == nil {
			if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	expect("before", &oldCert, true)
	expect("before", &newCert, false)

	// The new CA joins the file: nothing changes until Reload (the clock
	// stands still, so the files are not looked at).
	writeFile(t, caFile, append(append([]byte{}, oldCA.pem...), newCA.pem...))
	expect("file written, not reloaded", &newCert, false)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	expect("after Reload", &newCert, true)
	expect("after Reload", &oldCert, true)

	// A broken CA file: Reload fails, the CAs (and certificate) stay.
	writeFile(t, caFile, []byte("garbage"))
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), "client CA") {
		t.Fatalf("Reload with a broken CA file = %v, want a client CA error", err)
	}
	expect("after a failed Reload", &newCert, true)

	// The old CA leaves the file; a handshake a second later sees the change.
	writeFile(t, caFile, newCA.pem)
	if err := os.Chtimes(caFile, time.Now().Add(time.Minute), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	advance(1100 * time.Millisecond)
	expect("after the file changed", &oldCert, false)
	expect("after the file changed", &newCert, true)
}
