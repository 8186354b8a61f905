package clusterfault

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build compiles Starling's command into dir and returns the binary's
// path. extra is added to go build's flags (such as -race).
func Build(ctx context.Context, moduleRoot, dir string, extra ...string) (string, error) {
	bin := dir + "/starling"
	args := append([]string{"build", "-o", bin}, extra...)
	args = append(args, "./cmd/starling")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = moduleRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/starling: %w\n%s", err, out)
	}
	return bin, nil
}

// Exit is a node process that ended without being asked to, or that ended
// with an error when asked to stop.
type Exit struct {
	Node string
	At   time.Time
	Err  string
	Tail string // the end of its log
}

func (e Exit) String() string {
	return fmt.Sprintf("node %s exited at %s: %s; log tail:\n%s", e.Node, e.At.Format("15:04:05.000"), e.Err, e.Tail)
}

// Node is one Starling process of the cluster.
type Node struct {
	Name  string
	Index int
	MQTT  string // MQTT over TCP, host:port
	HTTP  string // /readyz and the API
	Route string // the cluster port it listens on
	Data  string
	Peers []string // how it reaches the others: through their links
	Bin   string
	Conf  string // YAML config file
	Log   string // its stderr, appended to across restarts
	// LogLevel is its -log-level (warn if empty).
	LogLevel string

	exits func(Exit) // told about unexpected exits

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	expected bool          // the test is stopping it
	paused   bool
	starts   int
}

// Start runs the node and waits until its MQTT port accepts connections
// (or ctx ends, or the process exits).
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		return fmt.Errorf("%s: already running", n.Name)
	}
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("%s: log file: %w", n.Name, err)
	}
	n.starts++
	fmt.Fprintf(logf, "=== start %d at %s\n", n.starts, time.Now().Format("15:04:05.000"))
	level := n.LogLevel
	if level == "" {
		level = "warn"
	}
	cmd := exec.Command(n.Bin, "-config", n.Conf, "-tcp", n.MQTT, "-http", n.HTTP, "-data", n.Data,
		"-log-level", level, "-cluster-name", "faults", "-cluster-node", n.Name,
		"-cluster-listen", n.Route, "-cluster-peers", strings.Join(n.Peers, ","))
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test process dies, so do its nodes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.mu.Unlock()
		return fmt.Errorf("%s: start: %w", n.Name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.expected, n.paused = cmd, done, false, false
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		expected := n.expected
		n.cmd = nil
		n.mu.Unlock()
		close(done)
		if !expected {
			msg := "exited"
			if err != nil {
				msg = err.Error()
			}
			n.exits(Exit{Node: n.Name, At: time.Now(), Err: msg, Tail: n.Tail(40)})
		}
	}()
	for {
		if c, err := net.DialTimeout("tcp", n.MQTT, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting; log tail:\n%s", n.Name, n.Tail(40))
		case <-ctx.Done():
			return fmt.Errorf("%s: not listening on %s: %w", n.Name, n.MQTT, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Running reports whether the process is running (paused counts).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

func (n *Node) signal(sig syscall.Signal) (chan struct{}, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil, fmt.Errorf("%s: not running", n.Name)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		n.expected = true
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return nil, fmt.Errorf("%s: signal %v: %w", n.Name, sig, err)
	}
	return n.done, nil
}

// Kill ends the process with SIGKILL and waits until it has exited.
func (n *Node) Kill() error {
	done, err := n.signal(syscall.SIGKILL)
	if err != nil {
		return err
	}
	<-done
	return nil
}

// Stop asks the process to end (SIGTERM) and waits until it has, or until
// ctx ends (then it is killed). Ending with an error is reported.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	done, err := n.signal(syscall.SIGTERM)
	if err != nil {
		return err
	}
	select {
	case <-done:
	case <-ctx.Done():
		n.Kill()
		return fmt.Errorf("%s did not stop after SIGTERM; log tail:\n%s", n.Name, n.Tail(40))
	}
	if st := cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("%s ended with %s after SIGTERM; log tail:\n%s", n.Name, st, n.Tail(40))
	}
	return nil
}

// Pause freezes the process (SIGSTOP); Resume thaws it (SIGCONT).
func (n *Node) Pause() error {
	if _, err := n.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	n.mu.Lock()
	n.paused = true
	n.mu.Unlock()
	return nil
}

// Resume thaws a paused process.
func (n *Node) Resume() error {
	if _, err := n.signal(syscall.SIGCONT); err != nil {
		return err
	}
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
	return nil
}

// Cleanup kills the process if it runs, paused or not.
func (n *Node) Cleanup() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	if cmd != nil {
		n.expected = true
		cmd.Process.Signal(syscall.SIGKILL)
	}
	n.mu.Unlock()
	if cmd != nil {
		<-done
	}
}

// Wipe removes the node's data folder; the node must not be running.
func (n *Node) Wipe() error {
	if n.Running() {
		return fmt.Errorf("%s: wipe while running", n.Name)
	}
	if err := os.RemoveAll(n.Data); err != nil {
		return fmt.Errorf("%s: wipe: %w", n.Name, err)
	}
	return os.MkdirAll(n.Data, 0o700)
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// Ready reports whether the node's /readyz answers 200.
func (n *Node) Ready() bool {
	n.mu.Lock()
	paused := n.paused
	n.mu.Unlock()
	if paused {
		return false
	}
	resp, err := httpClient.Get("http://" + n.HTTP + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Tail returns the last lines of the node's log.
func (n *Node) Tail(lines int) string {
	b, err := os.ReadFile(n.Log)
	if err != nil {
		return fmt.Sprintf("(log: %v)", err)
	}
	b = bytes.TrimRight(b, "\n")
	for i, at := 0, len(b); i < lines; i++ {
		j := bytes.LastIndexByte(b[:at], '\n')
		if j < 0 {
			return string(b)
		}
		at = j
		if i == lines-1 {
			return string(b[j+1:])
		}
	}
	return string(b)
}

// Grep returns the log lines that contain any of words.
func (n *Node) Grep(words ...string) []string {
	b, err := os.ReadFile(n.Log)
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}
