// Package binarytest builds Starling's commands once per test binary and
// runs them as child processes, for tests that need a real process: one
// to kill with SIGKILL, or one with its own runtime settings.
package binarytest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// Main is the TestMain of a package that runs built commands: it builds
// each command named by a key of bins (a package path inside the module,
// such as "cmd/starling") into a temporary folder, stores the binary's
// path where the value points, runs the tests, removes the folder and
// exits with the tests' code.
func Main(m *testing.M, bins map[string]*string) {
	dir, err := os.MkdirTemp("", "starling-bin")
	if err != nil {
		fmt.Fprintf(os.Stderr, "binarytest: %v\n", err)
		os.Exit(1)
	}
	for pkg, dst := range bins {
		if *dst, err = Build(dir, pkg); err != nil {
			fmt.Fprintf(os.Stderr, "binarytest: %v\n", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Build compiles the module's package pkg (such as "cmd/starling") into
// dir, with extra go build flags, and returns the binary's path.
func Build(dir, pkg string, flags ...string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, "./"+pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./%s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// moduleRoot is the folder of the go.mod the tests run under.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("binarytest: not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// Proc is a command started by Start.
type Proc struct {
	Cmd    *exec.Cmd
	exited chan struct{}
}

// Start runs bin with args, the test process's environment plus env, and
// its standard error on the test's. The process is killed if the test
// process dies, and when the test ends. Start returns once addr accepts
// TCP connections; it fails the test if the process exits first or the
// test's patience runs out.
func Start(t testing.TB, addr string, env []string, bin string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", filepath.Base(bin), err)
	}
	p := &Proc{Cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.Kill)
	deadline := time.Now().Add(brokertest.Patience(t))
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before listening on %s: %v", filepath.Base(bin), addr, cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Kill()
			t.Fatalf("%s not listening on %s", filepath.Base(bin), addr)
		}
	}
}

// Kill sends SIGKILL, so nothing is flushed or closed, and waits for the
// process to end. Killing an ended process does nothing.
func (p *Proc) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Stop sends SIGTERM, the operator's stop, and waits for the process to
// end.
func (p *Proc) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
}
