package brokertest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Paho is a paho.golang MQTT 5 client that hands over what it receives on
// channels.
type Paho struct {
	*paho.Client
	Recv chan *paho.Publish
	Disc chan *paho.Disconnect
	nc   net.Conn
	once sync.Once
}

// Close disconnects normally and waits for the client to stop; cleanup
// does it for a client still open.
func (c *Paho) Close() {
	c.once.Do(func() {
		c.Disconnect(&paho.Disconnect{})
		c.nc.Close()
		<-c.Done()
	})
}

// DialPaho connects a paho.golang client to addr; cp may be nil for a clean
// start without keep alive. The client disconnects at cleanup.
func DialPaho(t testing.TB, addr, clientID string, cp *paho.Connect) (*Paho, *paho.Connack) {
	t.Helper()
	c, ack, err := TryDialPaho(t, addr, clientID, cp)
	if err != nil {
		t.Fatal(err)
	}
	return c, ack
}

// TryDialPaho is DialPaho with a failed or refused connect returned as an
// error, for clients that retry.
func TryDialPaho(t testing.TB, addr, clientID string, cp *paho.Connect) (*Paho, *paho.Connack, error) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, Patience(t))
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := &Paho{Recv: make(chan *paho.Publish, 10000), Disc: make(chan *paho.Disconnect, 1), nc: nc}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: clientID,
		Conn:     nc,
		// paho's own 10 s default bounds CONNACK, SUBACK and PUBACK waits
		// whatever the context says; a session hand-over between cluster
		// nodes under -race on a loaded machine took longer.
		PacketTimeout: Patience(t),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.Recv <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.Disc <- d },
	})
	if cp == nil {
		cp = &paho.Connect{CleanStart: true}
	}
	cp.ClientID = clientID
	ctx, cancel := context.WithTimeout(context.Background(), Patience(t))
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		nc.Close()
		return nil, ack, fmt.Errorf("connect %s: %w (CONNACK %+v)", clientID, err, ack)
	}
	t.Cleanup(c.Close)
	return c, ack, nil
}

// DialPahoWith is DialPaho for a client whose messages go to handle (on
// the client's goroutine, acknowledged when it returns) instead of Recv.
func DialPahoWith(t testing.TB, addr, clientID string, handle func(*paho.Publish)) *Paho {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, Patience(t))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &Paho{Disc: make(chan *paho.Disconnect, 1), nc: nc}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID:      clientID,
		Conn:          nc,
		PacketTimeout: Patience(t), // as in TryDialPaho
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			handle(pr.Packet)
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.Disc <- d },
	})
	ctx, cancel := context.WithTimeout(context.Background(), Patience(t))
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true}); err != nil {
		nc.Close()
		t.Fatalf("connect %s: %v", clientID, err)
	}
	t.Cleanup(c.Close)
	return c
}

// Sub subscribes and fails the test unless every subscription is granted.
func (c *Paho) Sub(t testing.TB, opts ...paho.SubscribeOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Patience(t))
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	for i, code := range sa.Reasons {
		if code >= 0x80 {
			t.Fatalf("subscribe %q: reason 0x%02x", opts[i].Topic, code)
		}
	}
}

// Pub publishes and, for QoS 1 and 2, waits for the acknowledgement.
func (c *Paho) Pub(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Patience(t))
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// Expect waits up to d for the next message.
func (c *Paho) Expect(t testing.TB, d time.Duration) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.Recv:
		return p
	case <-time.After(d):
		t.Fatalf("no message within %s", d)
	}
	return nil
}

// Quiet asserts nothing arrives for d.
func (c *Paho) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case p := <-c.Recv:
		t.Fatalf("unexpected message on %q: %q", p.Topic, p.Payload)
	case <-time.After(d):
	}
}
