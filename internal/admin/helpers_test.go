package admin

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
)

// startBroker runs a broker behind a loopback TCP listener until the test
// ends and returns it with the listener's address.
func startBroker(t *testing.T) (*broker.Broker, string) {
	t.Helper()
	return startBrokerLimits(t, config.Default().Limits)
}

// startBrokerLimits is startBroker with the given limits.
func startBrokerLimits(t *testing.T, lim config.Limits) (*broker.Broker, string) {
	t.Helper()
	b := broker.New(lim, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.HandleConn(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		b.Close(2 * time.Second)
	})
	return b, ln.Addr().String()
}

// client is a paho.golang MQTT 5 client that queues what it receives.
type client struct {
	*paho.Client
	nc   net.Conn
	recv chan *paho.Publish
	disc chan *paho.Disconnect
}

func dial(t *testing.T, addr, id string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{nc: nc, recv: make(chan *paho.Publish, 1000), disc: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.recv <- pr.Packet:
			default:
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.disc <- d:
			default:
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		nc.Close()
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(c.close)
	return c
}

func (c *client) close() {
	c.Disconnect(&paho.Disconnect{})
	c.nc.Close()
	<-c.Done()
}

func (c *client) subscribe(t *testing.T, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
}

func (c *client) publish(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: 1, Retain: retain}); err != nil {
		t.Fatal(err)
	}
}

// next returns the next message whose topic has the prefix.
func (c *client) next(t *testing.T, prefix string) *paho.Publish {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-c.recv:
			if strings.HasPrefix(p.Topic, prefix) {
				return p
			}
		case <-deadline:
			t.Fatalf("no message on %s* within 5 s", prefix)
			return nil
		}
	}
}

// do sends a request to srv with optional Basic credentials ("user:pass")
// and returns the status and body.
func do(t *testing.T, srv *httptest.Server, method, path, creds, body string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if creds != "" {
		u, p, _ := strings.Cut(creds, ":")
		req.SetBasicAuth(u, p)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}
