package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/freeport"
)

// binaries builds the command once per test run: one stamped with a version
// through -ldflags, one plain.
var binaries = sync.OnceValues(func() (map[string]string, error) {
	dir, err := os.MkdirTemp("", "starling-test-")
	if err != nil {
		return nil, err
	}
	bins := map[string]string{
		"stamped": filepath.Join(dir, "starling-stamped"),
		"plain":   filepath.Join(dir, "starling"),
	}
	// Built as scripts/release.sh builds (static, -trimpath), so that
	// TestReleaseBuild finds every package compiled and only links.
	for name, args := range map[string][]string{
		"stamped": {"build", "-trimpath", "-ldflags", "-X main.version=v9.8.7-test", "-o", bins["stamped"], "."},
		"plain":   {"build", "-trimpath", "-o", bins["plain"], "."},
	} {
		cmd := exec.Command(goTool(), args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, errors.New("go build (" + name + "): " + err.Error() + "\n" + string(out))
		}
	}
	return bins, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bins, err := binaries(); err == nil {
		os.RemoveAll(filepath.Dir(bins["plain"]))
	}
	os.Exit(code)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// run runs the named binary with args and returns its exit code and output.
func run(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	bins, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(bins[bin], args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"version"}} {
		code, out, _ := run(t, "stamped", args...)
		if code != 0 || out != "starling v9.8.7-test\n" {
			t.Errorf("starling %v = %d, %q; want 0, %q", args, code, out, "starling v9.8.7-test\n")
		}
	}
	// Without -ldflags the version comes from the build info.
	code, out, _ := run(t, "plain", "-version")
	if code != 0 || !strings.HasPrefix(out, "starling ") || len(strings.TrimSpace(out)) <= len("starling ") {
		t.Errorf("plain starling -version = %d, %q; want 0, \"starling <version>\"", code, out)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string   // exact
		stderrIn []string // each must appear in stderr
	}{
		{"defaults", []string{"-check"}, 0, "config ok\n", nil},
		{"good file", []string{"-check", "-config", "testdata/good.yaml"}, 0, "config ok\n", nil},
		{"unknown key", []string{"-check", "-config", "testdata/bad.yaml"}, 1, "",
			[]string{`testdata/bad.yaml:4: limits.max_qoss: unknown key (did you mean "max_qos"?)`}},
		{"bad values", []string{"-check", "-config", "testdata/invalid.yaml"}, 1, "",
			[]string{`log_format: must be text or json (got "xml")`, "limits.max_qos: must be 0, 1 or 2 (got 3)"}},
		{"missing file", []string{"-check", "-config", "testdata/nope.yaml"}, 1, "",
			[]string{"testdata/nope.yaml", "no such file"}},
		{"no listener", []string{"-check", "-config", "testdata/nolistener.yaml"}, 1, "",
			[]string{"tcp: no listener enabled"}},
		{"flag wins over file", []string{"-check", "-config", "testdata/nolistener.yaml", "-http", "127.0.0.1:0"}, 0, "config ok\n", nil},
		{"flag can disable", []string{"-check", "-tcp", "", "-http", ""}, 1, "", []string{"tcp: no listener enabled"}},
		{"bad flag value", []string{"-check", "-log-level", "loud", "-tcp", "nope"}, 1, "",
			[]string{`log_level: must be debug, info, warn or error (got "loud")`, `tcp: must be host:port`}},
		{"flag fixes file", []string{"-check", "-config", "testdata/good.yaml", "-log-format", "json", "-data", "/tmp/x"}, 0, "config ok\n", nil},
		{"unknown flag", []string{"-check", "-nope"}, 2, "", []string{"flag provided but not defined: -nope"}},
		{"extra argument", []string{"-check", "serve-me"}, 2, "", []string{`unexpected argument "serve-me"`}},
		{"help", []string{"-help"}, 0, "", []string{"-config file", "-tcp address", "-check"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, "stamped", tt.args...)
			if code != tt.code || out != tt.stdout {
				t.Errorf("starling %q = exit %d, stdout %q; want %d, %q\nstderr: %s", tt.args, code, out, tt.code, tt.stdout, errOut)
			}
			for _, s := range tt.stderrIn {
				if !strings.Contains(errOut, s) {
					t.Errorf("starling %q: stderr does not contain %q:\n%s", tt.args, s, errOut)
				}
			}
		})
	}
}

// start runs the plain binary with args and returns it running, its stderr
// collected in a buffer safe to read after Wait.
func start(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	bins, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	cmd := exec.Command(bins["plain"], args...)
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &errOut
}

// connect dials addr until it answers (10 s at most) and does an MQTT 3.1.1
// CONNECT, expecting CONNACK accepted.
func connect(t *testing.T, addr string) {
	t.Helper()
	var c net.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("broker never listened on %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// CONNECT: protocol "MQTT" level 4, clean session, keep alive 60, empty client ID.
	connectPacket := []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 0}
	if _, err := c.Write(connectPacket); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	if _, err := io.ReadFull(c, connack); err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	if !bytes.Equal(connack, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK = % x, want 20 02 00 00", connack)
	}
}

func TestServeUntilSignal(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		t.Run(sig.String(), func(t *testing.T) {
			addr := freeport.Addr(t)
			cmd, errOut := start(t, "-tcp", addr, "-http", "", "-data", t.TempDir(), "-log-format", "json")
			connect(t, addr)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("after %v: %v; stderr:\n%s", sig, err, errOut)
			}
			for _, want := range []string{`"msg":"starling started"`, `"msg":"shutting down"`, `"msg":"stopped"`} {
				if !strings.Contains(errOut.String(), want) {
					t.Errorf("stderr lacks %s:\n%s", want, errOut)
				}
			}
		})
	}
}

func TestServeErrorExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // hold the port
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd, errOut := start(t, "-tcp", ln.Addr().String(), "-http", "", "-data", t.TempDir())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("with its port taken: %v, want exit status 1; stderr:\n%s", err, errOut)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after its port was taken")
	}
	if !strings.Contains(errOut.String(), "serve failed") {
		t.Errorf("stderr lacks the serve error:\n%s", errOut)
	}
}
