package bridge

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/binarytest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/testutil"
)

var starlingBin string

func TestMain(m *testing.M) {
	binarytest.Main(m, map[string]*string{"cmd/starling": &starlingBin})
}

// process is the built starling binary with a bridge, run by a test.
type process struct {
	t    *testing.T
	addr string
	conf string
	proc *binarytest.Proc
}

// newProcess prepares the binary with a bridge to remote forwarding
// sensors/# out, or with no bridge when remote is "".
func newProcess(t *testing.T, remote string) *process {
	return newProcessRule(t, remote, `{direction: out, filter: "sensors/#", qos: 2}`)
}

// newProcessRule is newProcess with the bridge's one topic rule.
func newProcessRule(t *testing.T, remote, rule string) *process {
	addr := freeport.Addr(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "starling.yaml")
	body := fmt.Sprintf(`tcp: %q
http: ""
data: %q
log_level: warn
`, addr, filepath.Join(dir, "data"))
	if remote != "" {
		body += fmt.Sprintf(`bridges:
  - name: cloud
    remote: %q
    reconnect_min: 50ms
    reconnect_max: 500ms
    topics:
      - %s
`, remote, rule)
	}
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, addr: addr, conf: conf}
	t.Cleanup(p.kill)
	return p
}

func (p *process) start() {
	p.t.Helper()
	p.proc = binarytest.Start(p.t, p.addr, nil, starlingBin, "-config", p.conf)
}

// kill sends SIGKILL: nothing is flushed or closed.
func (p *process) kill() {
	if p.proc != nil {
		p.proc.Kill()
		p.proc = nil
	}
}

// TestBridgeSIGKILLWhileQueued: messages acknowledged to their publisher
// while the remote is down wait in the bridge's queue in the store; a
// SIGKILL of Starling loses none of them. Once Starling is back and the
// remote is up, all arrive in order, the QoS 2 ones once.
func TestBridgeSIGKILLWhileQueued(t *testing.T) {
	needMosquitto(t)
	remote := freeport.Addr(t) // Mosquitto starts there later
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

// TestBridgeRemoteSIGKILL: the remote is a Starling process killed with
// SIGKILL while messages flow over the bridge, then restarted. What it
// had acknowledged is in its store; what it had not stays queued here and
// is sent again. A persistent subscriber there gets every message.
func TestBridgeRemoteSIGKILL(t *testing.T) {
	cloud := newProcess(t, "")
	cloud.start()
	edgeSrv, edge := startEdge(t, "mqtt://"+cloud.addr, []config.BridgeTopic{{Direction: "out", Filter: "sensors/#", QoS: 2}}, nil)
	pub := dial(t, edge, "sensor")
	next := map[string]int{"sensors/q1": 0, "sensors/q2": 0}
	subscribe := func() *testutil.Paho {
		expiry := uint32(3600)
		c, _ := testutil.DialPaho(t, cloud.addr, "cloud-app", &paho.Connect{CleanStart: false,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		c.Sub(t, paho.SubscribeOptions{Topic: "sensors/#", QoS: 2})
		return c
	}
	sub := subscribe()
	warmUp(t, pub, client{sub}, "sensors/warm")
	const n = 300
	for i := range n {
		if i == n/3 {
			cloud.kill()
			// What the first connection got before the kill counts.
			drain(t, sub, next)
			cloud.start()
			sub = subscribe()
		}
		pub.pub(t, "sensors/q1", 1, strconv.Itoa(i))
		pub.pub(t, "sensors/q2", 2, strconv.Itoa(i))
	}
	for next["sensors/q1"] < n || next["sensors/q2"] < n {
		checkNextDup(t, client{sub}.expect(t), next)
	}
	drained(t, edgeSrv)
}

// drain takes what c received before its broker died.
func drain(t *testing.T, c *testutil.Paho, next map[string]int) {
	t.Helper()
	for {
		select {
		case p := <-c.Recv:
			checkNextDup(t, p, next)
		default:
			return
		}
	}
}

// checkNextDup is checkNext allowing repeats at QoS 2 too: a subscriber
// whose broker is killed may get again a QoS 2 message whose PUBREC the
// broker had not stored.
func checkNextDup(t *testing.T, p *paho.Publish, next map[string]int) {
	t.Helper()
	if string(p.Payload) == "warm-up" {
		return
	}
	i, err := strconv.Atoi(string(p.Payload))
	if err != nil {
		t.Fatalf("payload %q on %s", p.Payload, p.Topic)
	}
	switch want := next[p.Topic]; {
	case i == want:
		next[p.Topic]++
	case i > want:
		t.Fatalf("%s: got message %d before %d (lost or out of order)", p.Topic, i, want)
	}
}

// TestBridgeRemovedDropsSession: a bridge taken out of the configuration
// leaves no session behind to queue messages nobody forwards.
func TestBridgeRemovedDropsSession(t *testing.T) {
	p := newProcess(t, "mqtt://"+freeport.Addr(t))
	p.start()
	p.kill()
	sessions := func() string {
		out, err := exec.Command(starlingBin, "store", "sessions", "-data", filepath.Join(filepath.Dir(p.conf), "data")).CombinedOutput()
		if err != nil {
			t.Fatalf("starling store sessions: %v\n%s", err, out)
		}
		return string(out)
	}
	if s := sessions(); !strings.Contains(s, "$internal/bridge/cloud") {
		t.Fatalf("the bridge's session is not in the store:\n%s", s)
	}
	body, err := os.ReadFile(p.conf)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, _ := strings.Cut(string(body), "bridges:")
	if err := os.WriteFile(p.conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.start()
	p.proc.Stop()
	p.proc = nil
	if s := sessions(); strings.Contains(s, "$internal/bridge/cloud") {
		t.Errorf("the removed bridge's session is still in the store:\n%s", s)
	}
}

// TestBridgeInboundSIGKILL: messages coming in from Mosquitto while
// Starling is killed with SIGKILL are not lost: the bridge acknowledges
// each to Mosquitto only once Starling has stored it, so Mosquitto keeps
// the rest in the bridge's session and sends them after the restart. A
// persistent subscriber here gets every message, in order.
func TestBridgeInboundSIGKILL(t *testing.T) {
	m := startMosquitto(t, "")
	sp := newProcessRule(t, "mqtt://"+m.addr, `{direction: in, filter: "cmd/#", qos: 1}`)
	sp.start()
	subscribe := func() *testutil.Paho {
		expiry := uint32(3600)
		c, _ := testutil.DialPaho(t, sp.addr, "device", &paho.Connect{CleanStart: false,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		c.Sub(t, paho.SubscribeOptions{Topic: "cmd/#", QoS: 1})
		return c
	}
	sub := subscribe()
	cloud := dial(t, m.addr, "cloud-app")
	warmUp(t, cloud, client{sub}, "cmd/warm")
	next := map[string]int{"cmd/q1": 0}
	const n = 300
	for i := range n {
		if i == n/3 {
			sp.kill()
			drain(t, sub, next)
		}
		cloud.pub(t, "cmd/q1", 1, strconv.Itoa(i))
	}
	sp.start()
	sub = subscribe()
	for next["cmd/q1"] < n {
		checkNextDup(t, client{sub}.expect(t), next)
	}
}
