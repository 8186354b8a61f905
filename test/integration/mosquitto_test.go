package integration

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/testutil"
)

// mosqFormat prints one received message per line, after a marker that
// debug output (-d) never starts with.
const mosqFormat = "MSG|%t|%p|%q|%r|%P"

// mosqRequire returns the path of a mosquitto client binary. Missing
// binaries fail the test in CI (test.sh installs them) and skip it elsewhere.
func mosqRequire(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := name + " not found: install Debian's mosquitto-clients (apt-get install -y mosquitto-clients); test.sh installs it"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// mosqHostPort splits the broker address for -h and -p.
func mosqHostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return h, p
}

// mosqSub is a running mosquitto_sub.
type mosqSub struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string // MSG| lines, format mosqFormat without the marker
	done  chan struct{}

	mu  sync.Mutex
	out []string // every output line, for failure messages
}

// mosqStartSub runs mosquitto_sub -d with the given arguments against addr
// and returns once the broker acknowledged the subscription.
func mosqStartSub(t *testing.T, addr string, args ...string) *mosqSub {
	t.Helper()
	bin := mosqRequire(t, "mosquitto_sub")
	host, port := mosqHostPort(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	all := append([]string{"-h", host, "-p", port, "-d", "-F", mosqFormat, "-W", "10"}, args...)
	// stdout is a pipe: line-buffer it so the SUBACK debug line shows at once.
	if sb, err := exec.LookPath("stdbuf"); err == nil {
		all = append([]string{"-oL", bin}, all...)
		bin = sb
	}
	cmd := exec.CommandContext(ctx, bin, all...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatalf("mosquitto_sub: %v", err)
	}
	s := &mosqSub{t: t, cmd: cmd, lines: make(chan string, 100), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	subacked := make(chan struct{})
	go func() {
		defer close(s.done)
		defer close(s.lines)
		sc := bufio.NewScanner(stdout)
		acked := false
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.out = append(s.out, line)
			s.mu.Unlock()
			switch {
			case strings.HasPrefix(line, "MSG|"):
				s.lines <- strings.TrimPrefix(line, "MSG|")
			case !acked && strings.Contains(line, "received SUBACK"):
				acked = true
				close(subacked)
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.done
		cmd.Wait()
		cancel()
	})
	select {
	case <-subacked:
	case <-s.done:
		t.Fatalf("mosquitto_sub %v exited before SUBACK:\n%s", args, s.output())
	case <-time.After(v3Wait):
		t.Fatalf("mosquitto_sub %v: no SUBACK within %v:\n%s", args, v3Wait, s.output())
	}
	return s
}

func (s *mosqSub) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.out, "\n")
}

// expect waits for the next message line and compares it with want
// ("topic|payload|qos|retain|user properties").
func (s *mosqSub) expect(want string) {
	s.t.Helper()
	select {
	case got, ok := <-s.lines:
		if !ok {
			s.t.Fatalf("mosquitto_sub exited, want %q:\n%s", want, s.output())
		}
		if got != want {
			s.t.Fatalf("mosquitto_sub printed %q, want %q", got, want)
		}
	case <-time.After(v3Wait):
		s.t.Fatalf("mosquitto_sub: no message within %v, want %q:\n%s", v3Wait, want, s.output())
	}
}

// expectUnordered waits for len(want) message lines and compares them with
// want, in any order.
func (s *mosqSub) expectUnordered(want ...string) {
	s.t.Helper()
	var got []string
	for range want {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("mosquitto_sub exited after %q, want %q:\n%s", got, want, s.output())
			}
			got = append(got, l)
		case <-time.After(v3Wait):
			s.t.Fatalf("mosquitto_sub: %q within %v, want %q:\n%s", got, v3Wait, want, s.output())
		}
	}
	w := slices.Sorted(slices.Values(want))
	slices.Sort(got)
	if !slices.Equal(got, w) {
		s.t.Fatalf("mosquitto_sub printed %q, want %q in any order", got, w)
	}
}

// exited waits for mosquitto_sub to exit by itself (-C reached) with status 0.
func (s *mosqSub) exited() {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(v3Wait):
		s.t.Fatalf("mosquitto_sub did not exit after its message count:\n%s", s.output())
	}
	if err := s.cmd.Wait(); err != nil {
		s.t.Fatalf("mosquitto_sub: %v:\n%s", err, s.output())
	}
}

// mosqPub runs mosquitto_pub to completion.
func mosqPub(t *testing.T, addr string, args ...string) {
	t.Helper()
	bin := mosqRequire(t, "mosquitto_pub")
	host, port := mosqHostPort(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), v3Wait)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %v: %v\n%s", args, err, out)
	}
}

func TestMosquittoPubSubV311(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s := mosqStartSub(t, addr, "-V", "mqttv311", "-t", "mosq/311/#", "-C", "2", "-i", "mosq-sub-311")
	mosqPub(t, addr, "-V", "mqttv311", "-t", "mosq/311/a", "-m", "hello 311")
	mosqPub(t, addr, "-V", "mqttv311", "-t", "mosq/311/b/c", "-m", "second")
	s.expect("mosq/311/a|hello 311|0|0|")
	s.expect("mosq/311/b/c|second|0|0|")
	s.exited()
}

func TestMosquittoPubSubV5(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s := mosqStartSub(t, addr, "-V", "mqttv5", "-t", "mosq/5/+", "-C", "1", "-i", "mosq-sub-5")
	mosqPub(t, addr, "-V", "mqttv5", "-t", "mosq/5/x", "-m", "hello 5")
	s.expect("mosq/5/x|hello 5|0|0|")
	s.exited()
}

// MQTT 3.1 clients talk to 3.1.1 and 5 ones through the broker.
func TestMosquittoMixedVersions(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s31 := mosqStartSub(t, addr, "-V", "mqttv31", "-t", "mosq/mix", "-q", "1", "-C", "2", "-i", "mosq-sub-31")
	s5 := mosqStartSub(t, addr, "-V", "mqttv5", "-t", "mosq/mix", "-q", "2", "-C", "2", "-i", "mosq-sub-mix5")
	mosqPub(t, addr, "-V", "mqttv5", "-q", "2", "-t", "mosq/mix", "-m", "from 5")
	mosqPub(t, addr, "-V", "mqttv31", "-q", "1", "-t", "mosq/mix", "-m", "from 31")
	s31.expect("mosq/mix|from 5|1|0|")
	s31.expect("mosq/mix|from 31|1|0|")
	// In either order: libmosquitto hands a QoS 2 message to the
	// application only once the broker's PUBREL arrives, and the QoS 1
	// message published next may reach the client before that PUBREL.
	s5.expectUnordered("mosq/mix|from 5|2|0|", "mosq/mix|from 31|1|0|")
	s31.exited()
	s5.exited()
}

// QoS 1 end to end, and a QoS 1 publish to a QoS 0 subscription arrives at
// QoS 0.
func TestMosquittoQoS1(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			s1 := mosqStartSub(t, addr, "-V", v, "-t", "mosq/q1/"+v, "-q", "1", "-C", "1", "-i", "mosq-q1-"+v)
			s0 := mosqStartSub(t, addr, "-V", v, "-t", "mosq/q1/"+v, "-q", "0", "-C", "1", "-i", "mosq-q0-"+v)
			mosqPub(t, addr, "-V", v, "-q", "1", "-t", "mosq/q1/"+v, "-m", "at least once")
			s1.expect("mosq/q1/" + v + "|at least once|1|0|")
			s0.expect("mosq/q1/" + v + "|at least once|0|0|")
			s1.exited()
			s0.exited()
		})
	}
}

// A retained message from mosquitto_pub -r reaches a later mosquitto_sub with
// the retain flag; an empty retained message clears it.
func TestMosquittoRetained(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	mosqPub(t, addr, "-V", "mqttv311", "-q", "1", "-r", "-t", "mosq/ret", "-m", "kept")
	for _, v := range []string{"mqttv311", "mqttv5"} {
		s := mosqStartSub(t, addr, "-V", v, "-q", "1", "-t", "mosq/ret", "-C", "1", "-i", "mosq-ret-"+v)
		s.expect("mosq/ret|kept|1|1|")
		s.exited()
	}
	mosqPub(t, addr, "-V", "mqttv5", "-q", "1", "-r", "-t", "mosq/ret", "-n")
	c := v3Connect(t, addr, "mosq-ret-check", nil)
	c.sub("mosq/ret", 1)
	c.expectNone(200 * time.Millisecond)
}

// MQTT 5 user properties set with -D publish user-property reach a v5
// subscriber, in order and with duplicates kept [MQTT-3.3.2-17, 3.3.2-18].
func TestMosquittoUserPropertyV5(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s := mosqStartSub(t, addr, "-V", "mqttv5", "-t", "mosq/up", "-q", "1", "-C", "2", "-i", "mosq-up")
	mosqPub(t, addr, "-V", "mqttv5", "-q", "1", "-t", "mosq/up", "-m", "with props", "-D", "publish", "user-property", "region", "eu-west")
	s.expect("mosq/up|with props|1|0|region:eu-west")
	mosqPub(t, addr, "-V", "mqttv5", "-q", "1", "-t", "mosq/up", "-m", "two",
		"-D", "publish", "user-property", "k", "1", "-D", "publish", "user-property", "k", "2")
	s.expect("mosq/up|two|1|0|k:1 k:2")
	s.exited()
}

// A mosquitto_sub killed without DISCONNECT has its will published.
func TestMosquittoWill(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	w := v3Watcher(t, addr, "mosq-will-watch", "mosq/will")
	s := mosqStartSub(t, addr, "-V", "mqttv311", "-t", "mosq/none", "-i", "mosq-will",
		"--will-topic", "mosq/will", "--will-payload", "mosquitto_sub died", "--will-qos", "1")
	w.expectNone(100 * time.Millisecond)
	s.cmd.Process.Signal(syscall.SIGKILL)
	w.expectMsg("mosq/will", "mosquitto_sub died", 1, false)
}
