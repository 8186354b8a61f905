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
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(nodeDir, "pubsub.mjs"), port)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("node pubsub.mjs did not finish within 90 s:\n%s", out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("node pubsub.mjs exited with %d:\n%s", ee.ExitCode(), out)
	}
	if err != nil {
		t.Fatalf("node pubsub.mjs: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
