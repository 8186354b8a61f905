package main

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
)

// The defaults let no other machine in: a broker started with nothing
// configured serves this machine only.
func TestDefaultIsLocalOnly(t *testing.T) {
	cfg := config.Default()
	for name, addr := range map[string]string{"tcp": cfg.TCP, "http": cfg.HTTP} {
		if !loopbackOnly(addr) {
			t.Errorf("default %s address %q is reachable from other machines", name, addr)
		}
	}
	if d := openDoors(cfg); len(d) != 0 {
		t.Errorf("defaults have open doors: %v", d)
	}
}

func TestOpenDoors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*config.Config)
		want   []string // listeners
	}{
		{"every interface", func(c *config.Config) { c.TCP, c.HTTP = ":1883", ":8080" }, []string{"tcp", "http"}},
		{"unspecified addresses", func(c *config.Config) { c.TCP, c.HTTP = "0.0.0.0:1883", "[::]:8080" }, []string{"tcp", "http"}},
		{"a public address", func(c *config.Config) { c.TCP, c.HTTP = "192.0.2.1:1883", "" }, []string{"tcp"}},
		{"loopback names", func(c *config.Config) { c.TCP, c.HTTP = "[::1]:1883", "localhost:8080" }, nil},
		{"with an ACL", func(c *config.Config) { c.TCP = ":1883"; c.Auth.ACLFile = "acl" }, nil},
		{"no anonymous", func(c *config.Config) {
			c.TCP = ":1883"
			c.Auth.AllowAnonymous, c.Auth.PasswordFile = false, "passwd"
		}, nil},
		{"anonymous on one listener", func(c *config.Config) {
			c.TCP, c.HTTP, c.MQTTS = ":1883", ":8080", ":8883"
			c.Auth.AllowAnonymous, c.Auth.PasswordFile = false, "passwd"
			c.Auth.AnonymousListeners = []string{"http"}
		}, []string{"http"}},
		{"tls listeners too", func(c *config.Config) {
			c.TCP, c.HTTP, c.MQTTS, c.HTTPS, c.ListenAny = "", "", ":8883", ":8443", ":443"
		},
			[]string{"mqtts", "https", "listen_any"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			tt.mutate(&cfg)
			var got []string
			for _, d := range openDoors(cfg) {
				got = append(got, d.listener)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("open doors %v, want %v", got, tt.want)
			}
		})
	}
}

// Each open door gets its own warning at start, naming the listener, its
// address and the fix; a local-only broker says that it is.
func TestWarnOpenDoors(t *testing.T) {
	logged := func(cfg config.Config) string {
		var buf bytes.Buffer
		warnOpenDoors(slog.New(slog.NewTextHandler(&buf, nil)), cfg)
		return buf.String()
	}
	cfg := config.Default()
	cfg.TCP, cfg.HTTP = ":1883", "0.0.0.0:8080"
	out := logged(cfg)
	for _, want := range []string{"level=WARN", "listener=tcp addr=:1883", "listener=http addr=0.0.0.0:8080", "auth.allow_anonymous: false"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "level=WARN"); n != 2 {
		t.Errorf("%d warnings, want one per open listener:\n%s", n, out)
	}
	cfg.Cluster.Name, cfg.Cluster.Listen = "c", ":7222"
	if out := logged(cfg); !strings.Contains(out, "without cluster.token") {
		t.Errorf("no warning for a cluster port without a token:\n%s", out)
	}
	out = logged(config.Default())
	if strings.Contains(out, "level=WARN") || !strings.Contains(out, "loopback only") {
		t.Errorf("defaults: want the local-only note and no warning:\n%s", out)
	}
}

// The binary logs the local-only note at start (and the warnings beside it:
// TestWarnOpenDoors; tests bind loopback only).
func TestServeSaysLocalOnly(t *testing.T) {
	addr := freeport.Addr(t)
	cmd, errOut := start(t, "-tcp", addr, "-http", "", "-data", t.TempDir())
	connect(t, addr)
	// SIGTERM is handled after the start lines, so they are all written
	// once it exits.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v; stderr:\n%s", err, errOut)
	}
	if !strings.Contains(errOut.String(), "listening on loopback only") {
		t.Errorf("stderr lacks the local-only note:\n%s", errOut)
	}
}
