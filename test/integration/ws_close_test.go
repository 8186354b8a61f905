package integration

import (
	"context"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// A WebSocket closes with the code that matches the MQTT reason: 1001
// (going away) for 0x8B server shutting down, 1002 for a malformed packet.
func TestWebSocketCloseCodeMatchesReason(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		act  func(srvClose func(), c *transport.WSConn)
		want uint16
	}{
		{"shutdown", func(srvClose func(), _ *transport.WSConn) { srvClose() }, 1001},
		{"malformed", func(_ func(), c *transport.WSConn) { c.Write([]byte{0x30, 0x02, 0xff, 0xff}) }, 1002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := testutil.StartBroker(t, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			nc, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", "mqtt", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			wc := nc.(*transport.WSConn)
			buf, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "wsclose-" + tc.name}, packet.V5)
			wc.Write(buf)
			rd := make([]byte, 64)
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := wc.Read(rd); err != nil {
				t.Fatalf("CONNACK: %v", err)
			}
			tc.act(func() { srv.Close() }, wc)
			for {
				if _, err := wc.Read(rd); err != nil {
					break
				}
			}
			if got := wc.PeerCloseCode(); got != tc.want {
				t.Fatalf("close code %d, want %d", got, tc.want)
			}
		})
	}
}
