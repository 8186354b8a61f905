package integration

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/testutil"
)

// v5Client is a paho.golang MQTT 5 client that records what it receives.
type v5Client struct {
	*paho.Client
	mu   sync.Mutex
	got  []*paho.Publish
	recv chan *paho.Publish
	disc chan *paho.Disconnect
}

// dialV5 connects a paho.golang client; cp may be nil for defaults.
func dialV5(t *testing.T, addr, clientID string, cp *paho.Connect) (*v5Client, *paho.Connack) {
	t.Helper()
	// Every wait here is for something that should happen soon: it
	// follows the test's deadline (testutil.Patience), since a fixed few
	// seconds is missed by a slow -race run on a loaded machine.
	nc, err := net.DialTimeout("tcp", addr, testutil.Patience(t))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &v5Client{recv: make(chan *paho.Publish, 1000), disc: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID:      clientID,
		Conn:          nc,
		PacketTimeout: testutil.Patience(t),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.got = append(c.got, pr.Packet)
			c.mu.Unlock()
			c.recv <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.disc <- d },
	})
	if cp == nil {
		cp = &paho.Connect{CleanStart: true, KeepAlive: 30}
	}
	cp.ClientID = clientID
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		nc.Close()
		if ack != nil {
			return nil, ack
		}
		t.Fatalf("connect %s: %v", clientID, err)
	}
	t.Cleanup(func() {
		c.Disconnect(&paho.Disconnect{})
		nc.Close()
		<-c.Done()
	})
	return c, ack
}

func (c *v5Client) sub(t *testing.T, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	return c.subProps(t, nil, opts...)
}

func (c *v5Client) subProps(t *testing.T, props *paho.SubscribeProperties, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts, Properties: props})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return sa
}

func (c *v5Client) pub(t *testing.T, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// expect waits for the next message.
func (c *v5Client) expect(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.recv:
		return p
	case <-time.After(testutil.Patience(t)):
		t.Fatalf("no message within %v", testutil.Patience(t))
	}
	return nil
}

// expectNone asserts nothing arrives for a short while.
func (c *v5Client) expectNone(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case p := <-c.recv:
		t.Fatalf("unexpected message on %q: %q", p.Topic, p.Payload)
	case <-time.After(d):
	}
}
