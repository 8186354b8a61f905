package browser

import (
	"context"
	"net"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/testcert"
)

// tlsClient serves MQTT over TLS (client certificates verified when
// given) on a new loopback listener of srv's broker, and connects a
// paho.golang client to it with a certificate for cn.
func tlsClient(t *testing.T, srv *server, id, cn string) {
	t.Helper()
	pki := testcert.NewPKI(t)
	nc := pki.Dial(pki.Serve(func(c net.Conn) { srv.b.HandleConn(c) }), cn)
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 45}); err != nil {
		nc.Close()
		t.Fatalf("connect %s over TLS: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}); nc.Close(); <-c.Done() })
}
