package integration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// The starling server names its listeners in the connection metrics: a
// client over TCP counts under "tcp", one over WebSocket under "http".
func TestMetricsByListener(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, nil)
	dialV5(t, addr, "over-tcp", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wsc, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", "mqtt", nil)
	if err != nil {
		t.Fatalf("dial ws: %v", err)
	}
	ws := wsV5Client(t, wsc, "over-ws")
	ws.pub(t, &paho.Publish{Topic: "m/1", QoS: 1, Payload: []byte("abc")})

	want := []string{
		`mqtt_listener_connections{listener="tcp"} 1`,
		`mqtt_listener_connections{listener="http"} 1`,
		`mqtt_listener_connections_total{listener="tcp"} 1`,
		`mqtt_listener_connections_total{listener="http"} 1`,
		`mqtt_publish_received_total{qos="1"} 1`,
		`mqtt_publish_received_bytes_total{qos="1"} 3`,
		`mqtt_clients_connected_by_protocol{protocol="5.0"} 2`,
	}
	var body string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, "\n"+w+"\n") {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %s:\n%s", missing, grepMQTT(body))
		}
	}
}

func grepMQTT(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "mqtt_listener") || strings.HasPrefix(l, "mqtt_publish") || strings.HasPrefix(l, "mqtt_clients") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
