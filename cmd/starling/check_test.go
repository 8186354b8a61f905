package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// selfSigned writes a self-signed certificate for localhost and its key
// to dir under name.crt and name.key.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})))
	return certFile, keyFile
}

func writeFile(t *testing.T, name, text string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkConfig runs starling -check on a config file holding text (with
// {dir} replaced by a temporary folder that the test may fill) plus args.
func checkConfig(t *testing.T, dir, text string, args ...string) (int, string, string) {
	t.Helper()
	cfgFile := filepath.Join(dir, "starling.yaml")
	writeFile(t, cfgFile, strings.ReplaceAll(text, "{dir}", dir))
	return run(t, "stamped", append([]string{"-check", "-config", cfgFile}, args...)...)
}

func wantErrors(t *testing.T, code int, stderr string, want ...string) {
	t.Helper()
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
}

// -check reads the files the config names as serve would, and reports
// every problem with its key, and the file and line where one is known.
func TestCheckFiles(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("all good", func(t *testing.T) {
		dir := t.TempDir()
		selfSigned(t, dir, "server")
		writeFile(t, filepath.Join(dir, "passwd"), "# users\nalice:"+string(hash)+"\n")
		writeFile(t, filepath.Join(dir, "acl"), "allow all user alice sensors/#\n")
		code, out, errOut := checkConfig(t, dir, `tcp: 127.0.0.1:0
http: ""
mqtts: 127.0.0.1:0
data: {dir}/data
tls:
  cert_file: {dir}/server.crt
  key_file: {dir}/server.key
auth:
  password_file: {dir}/passwd
  acl_file: {dir}/acl
`)
		if code != 0 || out != "config ok\n" {
			t.Errorf("exit %d, stdout %q; want 0, config ok; stderr:\n%s", code, out, errOut)
		}
	})
	t.Run("missing certificate", func(t *testing.T) {
		dir := t.TempDir()
		code, _, errOut := checkConfig(t, dir, `http: ""
mqtts: ":8883"
tls:
  cert_file: {dir}/fullchain.pem
  key_file: {dir}/privkey.pem
`)
		wantErrors(t, code, errOut, "starling.yaml:4: tls.cert_file: open "+dir+"/fullchain.pem: no such file",
			"starling.yaml:5: tls.key_file: open "+dir+"/privkey.pem: no such file")
	})
	t.Run("key of another certificate", func(t *testing.T) {
		dir := t.TempDir()
		selfSigned(t, dir, "a")
		selfSigned(t, dir, "b")
		code, _, errOut := checkConfig(t, dir, "tls:\n  cert_file: {dir}/a.crt\n  key_file: {dir}/b.key\n")
		wantErrors(t, code, errOut, "starling.yaml:2: tls.cert_file: certificate "+dir+"/a.crt with key "+dir+"/b.key", "does not match")
	})
	t.Run("client CA", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "ca.pem"), "not a certificate\n")
		code, _, errOut := checkConfig(t, dir, "tls:\n  client_ca_file: {dir}/ca.pem\n")
		wantErrors(t, code, errOut, "tls.client_ca_file: "+dir+"/ca.pem: no PEM certificate found")
	})
	t.Run("missing password file", func(t *testing.T) {
		dir := t.TempDir()
		code, _, errOut := checkConfig(t, dir, "auth:\n  password_file: {dir}/passwd\n")
		wantErrors(t, code, errOut, "starling.yaml:2: auth.password_file: stat "+dir+"/passwd: no such file")
	})
	t.Run("bad password lines", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "passwd"), "alice:"+string(hash)+"\nbob\n\ncarol:nothash\nalice:"+string(hash)+"\n")
		code, _, errOut := checkConfig(t, dir, "auth:\n  password_file: {dir}/passwd\n")
		wantErrors(t, code, errOut,
			dir+"/passwd:2: auth.password_file: want user:hash",
			dir+"/passwd:4: auth.password_file: user \"carol\"",
			dir+"/passwd:5: auth.password_file: user \"alice\" listed twice (first on line 1)")
		if strings.Contains(errOut, string(hash)) {
			t.Errorf("an error shows a password hash:\n%s", errOut)
		}
	})
	t.Run("acl typos", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "acl"), "# rules\nallow pubish any sensors/#\nallow read any sensors/#\nalow read any x\n")
		code, _, errOut := checkConfig(t, dir, "auth:\n  acl_file: {dir}/acl\n")
		wantErrors(t, code, errOut,
			dir+`/acl:2: auth.acl_file: unknown action "pubish"`,
			dir+`/acl:4: auth.acl_file: want allow or deny, got "alow"`)
		if strings.Contains(errOut, "acl:3") {
			t.Errorf("a good line reported:\n%s", errOut)
		}
	})
	t.Run("data is a file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "data"), "")
		code, _, errOut := checkConfig(t, dir, "data: {dir}/data\n")
		wantErrors(t, code, errOut, "starling.yaml:1: data: "+dir+"/data is not a folder")
	})
	t.Run("data under a file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "data"), "")
		code, _, errOut := checkConfig(t, dir, "tcp: 127.0.0.1:0\n", "-data", dir+"/data/store")
		// The value came from the flag: no line of the file is blamed.
		wantErrors(t, code, errOut, "data: "+dir+"/data is not a folder")
		if strings.Contains(errOut, "starling.yaml") {
			t.Errorf("an error from a flag's value blames the file:\n%s", errOut)
		}
	})
	t.Run("memory store needs no data folder", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "data"), "")
		if code, out, errOut := checkConfig(t, dir, "store: memory\ndata: {dir}/data\n"); code != 0 {
			t.Errorf("exit %d, stdout %q; want 0; stderr:\n%s", code, out, errOut)
		}
	})
	t.Run("one pass", func(t *testing.T) {
		// Type errors, bad values and bad files, all in one run.
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "acl"), "allow pubish any #\n")
		code, _, errOut := checkConfig(t, dir, `log_format: xml
limits:
  max_qos: 3
  max_inflight: many
  max_qoss: 1
auth:
  acl_file: {dir}/acl
  password_file: {dir}/nope
`)
		wantErrors(t, code, errOut,
			"starling.yaml:1: log_format: must be text or json",
			"starling.yaml:3: limits.max_qos: must be 0, 1 or 2 (got 3)",
			"starling.yaml:4: limits.max_inflight: cannot unmarshal",
			`starling.yaml:5: limits.max_qoss: unknown key`,
			dir+`/acl:1: auth.acl_file: unknown action "pubish"`,
			"starling.yaml:8: auth.password_file: stat "+dir+"/nope")
	})
}

// -check -ports tries every listener's address; plain -check does not.
func TestCheckPorts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	text := "tcp: " + ln.Addr().String() + "\nhttp: 127.0.0.1:0\ndata: {dir}/data\n"
	if code, out, errOut := checkConfig(t, dir, text); code != 0 {
		t.Errorf("-check without -ports: exit %d, stdout %q; want 0; stderr:\n%s", code, out, errOut)
	}
	code, _, errOut := checkConfig(t, dir, text, "-ports")
	wantErrors(t, code, errOut, "starling.yaml:1: tcp: cannot listen on "+ln.Addr().String())
	if code, _, errOut := run(t, "stamped", "-ports"); code != 2 || !strings.Contains(errOut, "-ports goes with -check") {
		t.Errorf("-ports alone: exit %d, want 2; stderr:\n%s", code, errOut)
	}
}

// -check reads a bridge's CA and client certificate files.
func TestCheckBridgeFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.pem"), "not a certificate\n")
	code, _, stderr := checkConfig(t, dir, `bridges:
  - name: cloud
    remote: mqtts://127.0.0.1:8883
    ca_file: {dir}/ca.pem
    cert_file: {dir}/missing.pem
    key_file: {dir}/missing.key
    topics: [{direction: out, filter: "a/#", qos: 1}]
data: {dir}
`)
	wantErrors(t, code, stderr, "bridges[0].ca_file: "+dir+"/ca.pem: no PEM certificate found", "bridges[0].cert_file: certificate "+dir+"/missing.pem")
}
