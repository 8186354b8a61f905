package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
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
	return brokertest.Start(t, lim)
}

// client is a paho.golang MQTT 5 client that queues what it receives.
type client struct{ *brokertest.Paho }

func dial(t *testing.T, addr, id string) *client {
	t.Helper()
	c, _ := brokertest.DialPaho(t, addr, id, &paho.Connect{CleanStart: true, KeepAlive: 30})
	return &client{c}
}

func (c *client) close() { c.Close() }

func (c *client) subscribe(t *testing.T, filter string) {
	t.Helper()
	c.Sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
}

func (c *client) publish(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	c.Pub(t, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: 1, Retain: retain})
}

// next returns the next message whose topic has the prefix.
func (c *client) next(t *testing.T, prefix string) *paho.Publish {
	t.Helper()
	patience := brokertest.Patience(t)
	deadline := time.After(patience)
	for {
		select {
		case p := <-c.Recv:
			if strings.HasPrefix(p.Topic, prefix) {
				return p
			}
		case <-deadline:
			t.Fatalf("no message on %s* within %v", prefix, patience)
			return nil
		}
	}
}

// offlineSubscriber leaves an offline persistent session id (expiry
// 300 s) subscribed to filter at QoS 1, and waits until the broker has
// seen its connection end, leaving conns connections open.
func offlineSubscriber(t *testing.T, b *broker.Broker, addr, id, filter string, conns int64) {
	t.Helper()
	exp := uint32(300)
	c, _ := brokertest.DialPaho(t, addr, id, &paho.Connect{CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	c.Sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
	c.Disconnect(&paho.Disconnect{})
	c.Close()
	waitFor(t, id+"'s connection to end", func() bool { return b.Stats.Connections.Load() == conns })
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
