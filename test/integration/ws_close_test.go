package integration

import (
	"bufio"
	"context"
	"io"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
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
			ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
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
			nc.SetReadDeadline(time.Now().Add(testutil.Patience(t)))
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

// A refused MQTT 5 CONNECT over WebSocket closes with the close code that
// matches the CONNACK's reason: 0x97 (quota exceeded: here the connection
// limit) is a policy violation, 1008.
func TestWebSocketCloseCodeOnRefusedConnect(t *testing.T) {
	t.Parallel()
	srv, _ := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxConnections = 1 })
	url := "ws://" + srv.HTTPAddr().String() + "/mqtt"
	connect := func(id string) (*transport.WSConn, *packet.Connack) {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		nc, err := transport.DialWS(ctx, url, "mqtt", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		wc := nc.(*transport.WSConn)
		buf, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: id}, packet.V5)
		wc.Write(buf)
		nc.SetReadDeadline(time.Now().Add(testutil.Patience(t)))
		br := bufio.NewReader(wc)
		fh, err := packet.ReadFixedHeader(br)
		if err != nil {
			t.Fatalf("%s: CONNACK: %v", id, err)
		}
		body := make([]byte, fh.Remaining)
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatalf("%s: CONNACK body: %v", id, err)
		}
		p, err := packet.Decode(fh, body, packet.V5)
		if err != nil {
			t.Fatal(err)
		}
		return wc, p.(*packet.Connack)
	}
	if _, ack := connect("first"); ack.ReasonCode != packet.Success {
		t.Fatalf("first: CONNACK 0x%02x", byte(ack.ReasonCode))
	}
	wc, ack := connect("second")
	if ack.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("second: CONNACK 0x%02x, want 0x97", byte(ack.ReasonCode))
	}
	rd := make([]byte, 64)
	for {
		if _, err := wc.Read(rd); err != nil {
			break
		}
	}
	if got := wc.PeerCloseCode(); got != 1008 {
		t.Fatalf("close code %d after CONNACK 0x97, want 1008", got)
	}
}
