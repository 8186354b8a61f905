package integration

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// nodeDir holds the MQTT.js scripts, package.json and package-lock.json.
const nodeDir = "../node"

// needNode returns the node binary, or fails (on CI) or skips the test when
// node or test/node/node_modules is missing.
func needNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(nodeDir, "node_modules", "mqtt", "package.json"))
	}
	if err != nil {
		msg := "MQTT.js test needs node and test/node/node_modules (" + err.Error() + "): ./test.sh installs them (Debian's nodejs and npm, then npm ci --prefix test/node)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node
}

// MQTT.js, the client browsers and Node programs use, over WebSocket with
// MQTT 5 and 3.1.1: QoS 0, 1 and 2 and a 128 KiB message arrive intact
// (test/node/pubsub.mjs).
func TestWSMQTTJS(t *testing.T) {
	t.Parallel()
	node := needNode(t)
	srv, _ := testutil.StartBroker(t, nil)
	_, port, err := net.SplitHostPort(srv.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Node's WebSocket offers permessage-deflate; off by default, the
	// broker declines it.
	runNodeEnv(t, []string{"STARLING_DEFLATE=off"}, 90*time.Second, node, "pubsub.mjs", port)
}

// With websocket.compression on, MQTT.js (whose Node WebSocket offers
// permessage-deflate) negotiates it, and QoS 0, 1, 2 and a 128 KiB
// message still arrive intact, compressed both ways.
func TestWSMQTTJSDeflate(t *testing.T) {
	t.Parallel()
	node := needNode(t)
	srv, _ := testutil.StartBroker(t, func(c *starling.Config) { c.WebSocket.Compression = true })
	_, port, err := net.SplitHostPort(srv.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	runNodeEnv(t, []string{"STARLING_DEFLATE=on"}, 90*time.Second, node, "pubsub.mjs", port)
}

// runNode runs a script of test/node with node, within 90 s, and fails the
// test unless it exits 0.
func runNode(t *testing.T, node, script string, args ...string) {
	t.Helper()
	runNodeWithin(t, 90*time.Second, node, script, args...)
}

// runNodeWithin is runNode with another time limit.
func runNodeWithin(t *testing.T, limit time.Duration, node, script string, args ...string) {
	t.Helper()
	runNodeEnv(t, nil, limit, node, script, args...)
}

// runNodeEnv is runNodeWithin with variables added to the environment.
func runNodeEnv(t *testing.T, env []string, limit time.Duration, node, script string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join(nodeDir, script)}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("node %s did not finish within %v:\n%s", script, limit, out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("node %s exited with %d:\n%s", script, ee.ExitCode(), out)
	}
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	t.Logf("%s", out)
}

// The same over secure WebSocket: MQTT.js verifies the broker's
// certificate against the test CA.
func TestWSMQTTJSOverWSS(t *testing.T) {
	t.Parallel()
	node := needNode(t)
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, nil)
	_, port, err := net.SplitHostPort(srv.HTTPSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	runNode(t, node, "pubsub.mjs", port, pki.CAFile)
}

// featureLimits lets test/node/features.mjs send a 16 MiB payload and a
// burst of 10,000 QoS 1 messages that the subscriber may lag behind.
func featureLimits(c *starling.Config) {
	c.Store = "memory" // the burst measures the transport, not fsync
	c.Limits.MaxPacketSize = 17 << 20
	c.Limits.MaxQueued = 20000
}

// MQTT.js over WebSocket, MQTT 5 and 3.1.1: "+" and "#" filters match
// exactly, a retained message reaches a new subscriber (and is cleared),
// the last will of a client whose socket is destroyed is published (and not
// after a clean disconnect), 1 MiB and 16 MiB payloads arrive intact and
// 10,000 QoS 1 messages arrive complete and in order
// (test/node/features.mjs).
func TestWSMQTTJSFeatures(t *testing.T) {
	t.Parallel()
	node := needNode(t)
	srv, _ := testutil.StartBroker(t, featureLimits)
	_, port, err := net.SplitHostPort(srv.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	runNodeWithin(t, 120*time.Second, node, "features.mjs", port)
}

// The same over secure WebSocket.
func TestWSMQTTJSFeaturesOverWSS(t *testing.T) {
	t.Parallel()
	node := needNode(t)
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, featureLimits)
	_, port, err := net.SplitHostPort(srv.HTTPSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	runNodeWithin(t, 120*time.Second, node, "features.mjs", port, pki.CAFile)
}
