package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
)

// starling cert dev makes a CA and a server certificate that a client
// trusting the CA accepts for localhost, the loopback addresses and the
// host name, and that -check accepts as the broker's TLS files.
func TestCertDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	code, out, errOut := run(t, "stamped", "cert", "dev", "-dir", dir, "-host", "mqtt.example.test,192.0.2.5")
	if code != 0 {
		t.Fatalf("cert dev: exit %d; stderr:\n%s", code, errOut)
	}
	if !strings.Contains(out, "cert_file: "+dir+"/server.pem") {
		t.Errorf("output lacks the config lines:\n%s", out)
	}
	for name, mode := range map[string]os.FileMode{"ca.key": 0o600, "server.key": 0o600, "ca.pem": 0o644, "server.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"localhost", "127.0.0.1", "::1", "mqtt.example.test", "192.0.2.5"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	for _, name := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example.test", Roots: roots}); err == nil {
		t.Error("server certificate verifies for a name it was not made for")
	}

	// A real handshake on loopback, as mosquitto_sub --cafile would do it.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*tls.Conn).Handshake()
		io.Copy(io.Discard, c)
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d := &net.Dialer{Timeout: time.Minute}
	c, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort("localhost", port), &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS handshake with the development certificate: %v", err)
	}
	c.Close()

	cfg := config.Default()
	cfg.Data, cfg.MQTTS = t.TempDir(), "127.0.0.1:0"
	cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if errs := checkFiles(cfg); len(errs) > 0 {
		t.Errorf("-check rejects the development certificate: %v", errs)
	}

	// A second run keeps the files unless -force.
	before, _ := os.ReadFile(filepath.Join(dir, "server.pem"))
	if code, _, errOut := run(t, "stamped", "cert", "dev", "-dir", dir); code != 1 || !strings.Contains(errOut, "exists (-force replaces it)") {
		t.Errorf("second cert dev: exit %d, want 1; stderr:\n%s", code, errOut)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "server.pem")); string(after) != string(before) {
		t.Error("second cert dev without -force replaced server.pem")
	}
	if code, _, errOut := run(t, "stamped", "cert", "dev", "-dir", dir, "-force"); code != 0 {
		t.Errorf("cert dev -force: exit %d; stderr:\n%s", code, errOut)
	}
}

// starling help, -h and -help list the commands; help COMMAND shows the
// command's own usage.
func TestHelpListsCommands(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"-help"}} {
		code, out, errOut := run(t, "stamped", args...)
		if code != 0 {
			t.Errorf("starling %v: exit %d, want 0", args, code)
		}
		for _, want := range []string{"passwd", "store", "cert dev", "version", "help", "-check", "-config file"} {
			if !strings.Contains(out+errOut, want) {
				t.Errorf("starling %v does not mention %q:\n%s%s", args, want, out, errOut)
			}
		}
	}
	for cmd, want := range map[string]string{"passwd": "usage: starling passwd", "store": "usage: starling store", "cert": "usage: starling cert dev"} {
		code, out, _ := run(t, "stamped", "help", cmd)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("starling help %s: exit %d, stdout:\n%s", cmd, code, out)
		}
	}
}
