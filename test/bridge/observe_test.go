package bridge

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// TestBridgeObservable: the bridge's state shows in $SYS and in the
// metrics, and follows the link; a QoS 0 message sent while the link is
// down is counted as dropped.
func TestBridgeObservable(t *testing.T) {
	m := startMosquitto(t, "")
	px := startProxy(t, m.addr)
	srv, edge := startEdge(t, "mqtt://"+px.Addr(), edgeRules, nil)
	local := dial(t, edge, "local")
	local.Sub(t, paho.SubscribeOptions{Topic: "$SYS/broker/bridges/cloud/connected", QoS: 0})
	waitSys := func(want string) {
		t.Helper()
		for {
			p := local.expect(t)
			if string(p.Payload) == want {
				return
			}
		}
	}
	waitSys("true")
	metrics := func() string {
		resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for _, want := range []string{`mqtt_bridge_connected{bridge="cloud"} 1`, `mqtt_bridge_queued_messages{bridge="cloud"}`,
		`mqtt_bridge_sent_messages_total{bridge="cloud"}`, `mqtt_bridge_received_messages_total{bridge="cloud"}`,
		`mqtt_bridge_dropped_messages_total{bridge="cloud"}`, `mqtt_bridge_connects_total{bridge="cloud"} 1`} {
		if !strings.Contains(metrics(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	px.Cut()
	waitSys("false")
	if st := status(srv); st.Connected || st.LastError == "" || st.ErrorAt.IsZero() {
		t.Errorf("after the cut: %+v, want disconnected with the last error", st)
	}
	if !strings.Contains(metrics(), `mqtt_bridge_connected{bridge="cloud"} 0`) {
		t.Error("metrics still say connected")
	}
	// QoS 0 is not queued for a link that is down: dropped and counted.
	local.pub(t, "sensors/qos0", 0, "lost")
	waitFor(t, "the QoS 0 message counted as dropped", func() bool { return status(srv).Dropped == 1 })
	if !strings.Contains(metrics(), `mqtt_bridge_dropped_messages_total{bridge="cloud"} 1`) {
		t.Error("metrics do not count the dropped message")
	}
	px.Heal()
	waitSys("true")
}
