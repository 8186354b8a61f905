package bridge

import (
	"testing"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// startCloud runs a second Starling, the bridge's remote, with a secure
// WebSocket listener; it returns the server, its TCP address and its wss
// URL, and the CA file that verifies it.
func startCloud(t *testing.T) (srv *starling.Server, tcp, wss, caFile string) {
	t.Helper()
	caFile, cert, key := tlsFiles(t)
	srv, tcp = testutil.StartBroker(t, func(c *starling.Config) {
		c.HTTPS = "127.0.0.1:0"
		c.TLS.CertFile, c.TLS.KeyFile = cert, key
	})
	return srv, tcp, "wss://" + srv.HTTPSAddr().String() + "/mqtt", caFile
}

// TestBridgeStarlingsBothWaysNoLoop bridges two Starlings over wss with a
// "both" rule: a message published on either side reaches the other once
// and never comes back. MQTT 5 uses no-local; MQTT 3.1.1 has none, and the
// bridge drops the echo of what it sent.
func TestBridgeStarlingsBothWaysNoLoop(t *testing.T) {
	for _, proto := range []string{"5", "3.1.1"} {
		t.Run(proto, func(t *testing.T) { testBothWaysNoLoop(t, proto) })
	}
}

func testBothWaysNoLoop(t *testing.T, proto string) {
	_, cloudAddr, wss, ca := startCloud(t)
	edgeSrv, edgeAddr := startEdge(t, wss, []config.BridgeTopic{{Direction: "both", Filter: "shared/#", QoS: 2}},
		func(b *config.Bridge) { b.CAFile = ca; b.Protocol = proto })
	a := dial(t, edgeAddr, "edge-app")
	a.sub(t, "shared/#")
	b := dial(t, cloudAddr, "cloud-app")
	b.sub(t, "shared/#")
	warmUp(t, a, b, "shared/warm-a")
	warmUp(t, b, a, "shared/warm-b")
	base := status(edgeSrv)

	// seen counts payloads on c until stop arrives.
	seen := func(c client, stop string) map[string]int {
		t.Helper()
		n := map[string]int{}
		for {
			p := c.expect(t)
			n[string(p.Payload)]++
			if string(p.Payload) == stop {
				return n
			}
		}
	}
	a.pub(t, "shared/x", 1, "from-a")
	if n := seen(b, "from-a"); n["from-a"] != 1 {
		t.Fatalf("cloud got from-a %d times", n["from-a"])
	}
	// marker-b follows, on the same topic, any echo of from-a that the
	// cloud would send back: when it reaches the edge, so would have an
	// echo.
	b.pub(t, "shared/x", 1, "marker-b")
	if n := seen(a, "marker-b"); n["from-a"] != 1 {
		t.Errorf("edge got from-a %d times: it came back over the bridge", n["from-a"])
	}
	if n := seen(b, "marker-b"); len(n) != 1 {
		t.Errorf("cloud got %v before its own marker", n)
	}

	b.pub(t, "shared/y", 1, "from-b")
	if n := seen(a, "from-b"); n["from-b"] != 1 {
		t.Fatalf("edge got from-b %d times", n["from-b"])
	}
	a.pub(t, "shared/y", 1, "marker-a")
	if n := seen(b, "marker-a"); n["from-b"] != 1 {
		t.Errorf("cloud got from-b %d times: it came back over the bridge", n["from-b"])
	}
	if n := seen(a, "marker-a"); len(n) != 1 {
		t.Errorf("edge got %v before its own marker", n)
	}
	// The counters follow the acknowledgements, which may come after the
	// messages themselves.
	waitFor(t, "2 sent and 2 received", func() bool {
		st := status(edgeSrv)
		return st.Sent-base.Sent >= 2 && st.Received-base.Received >= 2
	})
	st := status(edgeSrv)
	if sent, recv := st.Sent-base.Sent, st.Received-base.Received; sent != 2 || recv != 2 {
		t.Errorf("bridge sent %d and received %d, want 2 and 2 (no loop)", sent, recv)
	}
}

// TestBridgeStarlingWSLinkCut is TestBridgeLinkCutNoLoss with a second
// Starling over WebSocket as the remote.
func TestBridgeStarlingWSLinkCut(t *testing.T) {
	cloudSrv, cloudAddr := testutil.StartBroker(t, nil)
	px := startProxy(t, cloudSrv.HTTPAddr().String())
	srv, edge := startEdge(t, "ws://"+px.Addr()+"/mqtt", []config.BridgeTopic{{Direction: "out", Filter: "sensors/#", QoS: 2}}, nil)
	local := dial(t, edge, "local")
	cloud := dial(t, cloudAddr, "cloud-app")
	cloud.sub(t, "sensors/#")
	warmUp(t, local, cloud, "sensors/warm")
	runCut(t, local, cloud, px, func() (bool, int) { st := status(srv); return st.Connected, st.Queued })
	drained(t, srv)
}
