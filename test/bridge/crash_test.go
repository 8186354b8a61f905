package bridge

import (
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

var starlingBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "starling-bridge")
	if err != nil {
		panic(err)
	}
	starlingBin = filepath.Join(dir, "starling")
	out, err := exec.Command("go", "build", "-o", starlingBin, "../../cmd/starling").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build starling: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is the built starling binary with a bridge, run by a test.
type process struct {
	t    *testing.T
	addr string
	conf string
	cmd  *exec.Cmd
}

func newProcess(t *testing.T, remote string) *process {
	addr := freeAddr(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "starling.yaml")
	body := fmt.Sprintf(`tcp: %q
http: ""
data: %q
log_level: warn
bridges:
  - name: cloud
    remote: %q
    reconnect_min: 50ms
    reconnect_max: 500ms
    topics:
      - {direction: out, filter: "sensors/#", qos: 2}
`, addr, filepath.Join(dir, "data"), remote)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, addr: addr, conf: conf}
	t.Cleanup(p.kill)
	return p
}

func (p *process) start() {
	p.t.Helper()
	p.cmd = exec.Command(starlingBin, "-config", p.conf)
	p.cmd.Stderr = os.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start starling: %v", err)
	}
	waitDial(p.t, p.addr)
}

// kill sends SIGKILL: nothing is flushed or closed.
func (p *process) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		p.cmd = nil
	}
}

// TestBridgeSIGKILLWhileQueued: messages acknowledged to their publisher
// while the remote is down wait in the bridge's queue in the store; a
// SIGKILL of Starling loses none of them. Once Starling is back and the
// remote is up, all arrive in order, the QoS 2 ones once.
func TestBridgeSIGKILLWhileQueued(t *testing.T) {
	needMosquitto(t)
	remote := freeAddr(t) // Mosquitto starts there later
	sp := newProcess(t, "mqtt://"+remote)
	sp.start()
	pub := dial(t, sp.addr, "sensor")
	const n = 200
	for i := range n {
		pub.pub(t, "sensors/q1", 1, strconv.Itoa(i))
		pub.pub(t, "sensors/q2", 2, strconv.Itoa(i))
	}
	sp.kill()

	m := startMosquitto(t, remote)
	cloud := dial(t, m.addr, "cloud-app")
	cloud.sub(t, "sensors/#")
	sp.start()
	next := map[string]int{"sensors/q1": 0, "sensors/q2": 0}
	for next["sensors/q1"] < n || next["sensors/q2"] < n {
		checkNext(t, cloud.expect(t), next)
	}
	// Nothing more: a marker through a new publisher comes next.
	pub = dial(t, sp.addr, "sensor-2")
	pub.pub(t, "sensors/q2", 2, strconv.Itoa(n))
	checkNext(t, cloud.expect(t), next)
	if next["sensors/q2"] != n+1 {
		t.Errorf("the marker did not come next")
	}
}
