package integration

import (
	"bufio"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// v3Wait bounds every wait for something that should happen.
const v3Wait = 5 * time.Second

// v3Client is a paho.mqtt.golang (3.1.1 / 3.1) client that records every
// message it receives, whichever handler it arrives on.
type v3Client struct {
	mqtt.Client
	t    *testing.T
	id   string
	msgs chan mqtt.Message
	tok  *mqtt.ConnectToken

	mu sync.Mutex
	nc net.Conn // the current network connection, to cut it without DISCONNECT
}

// v3Options returns paho options for addr: protocol 3.1.1, clean session, no
// automatic reconnect, an in-memory store and ordered delivery.
func v3Options(addr, clientID string) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(v3Wait).
		SetWriteTimeout(v3Wait).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		SetStore(mqtt.NewMemoryStore())
}

// v3Connect connects a paho client, failing the test if the broker refuses.
// mod may change the options (nil for the defaults of v3Options).
func v3Connect(t *testing.T, addr, clientID string, mod func(*mqtt.ClientOptions)) *v3Client {
	t.Helper()
	c, err := v3TryConnect(t, addr, clientID, mod)
	if err != nil {
		t.Fatalf("connect %q: %v", clientID, err)
	}
	return c
}

// v3TryConnect is v3Connect returning the connect error.
func v3TryConnect(t *testing.T, addr, clientID string, mod func(*mqtt.ClientOptions)) (*v3Client, error) {
	t.Helper()
	c := &v3Client{t: t, id: clientID, msgs: make(chan mqtt.Message, 1000)}
	o := v3Options(addr, clientID)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.msgs <- m })
	o.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		nc, err := net.DialTimeout("tcp", u.Host, v3Wait)
		if err == nil {
			c.mu.Lock()
			c.nc = nc
			c.mu.Unlock()
		}
		return nc, err
	})
	if mod != nil {
		mod(o)
	}
	c.Client = mqtt.NewClient(o)
	tok := c.Client.Connect()
	if !tok.WaitTimeout(v3Wait) {
		c.kill()
		t.Fatalf("connect %q: no CONNACK within %v", clientID, v3Wait)
	}
	c.tok = tok.(*mqtt.ConnectToken)
	t.Cleanup(c.close)
	if err := tok.Error(); err != nil {
		return c, err
	}
	return c, nil
}

// sessionPresent is the CONNACK session present flag.
func (c *v3Client) sessionPresent() bool { return c.tok.SessionPresent() }

// close disconnects politely if still connected and closes the socket.
func (c *v3Client) close() {
	if c.IsConnectionOpen() {
		c.Disconnect(250)
	}
	c.kill()
}

// kill closes the network connection without DISCONNECT (an abnormal end).
func (c *v3Client) kill() {
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}

// sub subscribes to filter at qos and fails unless the broker grants want.
// Messages arrive on the client's channel (no per-subscription handler).
func (c *v3Client) sub(filter string, qos byte) {
	c.t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(v3Wait) {
		c.t.Fatalf("%s: SUBACK for %q not within %v", c.id, filter, v3Wait)
	}
	if err := tok.Error(); err != nil {
		c.t.Fatalf("%s: subscribe %q: %v", c.id, filter, err)
	}
	granted := tok.(*mqtt.SubscribeToken).Result()[filter]
	if granted != qos {
		c.t.Fatalf("%s: subscribe %q: granted QoS %d, want %d", c.id, filter, granted, qos)
	}
}

// pub publishes and waits for the flow to complete (PUBACK / PUBCOMP).
func (c *v3Client) pub(topic string, qos byte, retain bool, payload any) {
	c.t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(v3Wait) {
		c.t.Fatalf("%s: publish %q QoS %d not completed within %v", c.id, topic, qos, v3Wait)
	}
	if err := tok.Error(); err != nil {
		c.t.Fatalf("%s: publish %q: %v", c.id, topic, err)
	}
}

// expect returns the next message or fails the test.
func (c *v3Client) expect() mqtt.Message {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(v3Wait):
		c.t.Fatalf("%s: no message within %v", c.id, v3Wait)
	}
	return nil
}

// expectMsg waits for the next message and checks topic, payload, QoS and
// retain flag.
func (c *v3Client) expectMsg(topic, payload string, qos byte, retained bool) mqtt.Message {
	c.t.Helper()
	m := c.expect()
	if m.Topic() != topic || string(m.Payload()) != payload || m.Qos() != qos || m.Retained() != retained {
		c.t.Fatalf("%s: got topic %q payload %q qos %d retain %v; want %q %q qos %d retain %v",
			c.id, m.Topic(), m.Payload(), m.Qos(), m.Retained(), topic, payload, qos, retained)
	}
	return m
}

// expectNone asserts that no message arrives within d.
func (c *v3Client) expectNone(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		c.t.Fatalf("%s: unexpected message topic %q payload %q qos %d retain %v", c.id, m.Topic(), m.Payload(), m.Qos(), m.Retained())
	case <-time.After(d):
	}
}

// v3Raw dials a raw 3.1.1 connection.
func v3Raw(t *testing.T, addr string) *testutil.Raw {
	t.Helper()
	return testutil.Dial(t, addr, packet.V311)
}

// v3RawConnect dials a raw client and connects it, expecting CONNACK 0.
func v3RawConnect(t *testing.T, addr string, version byte, clientID string, clean bool) *testutil.Raw {
	t.Helper()
	r := testutil.Dial(t, addr, version)
	if ack := r.Connect(clientID, clean); ack.ReasonCode != 0 {
		t.Fatalf("%q: CONNACK return code 0x%02x, want 0", clientID, byte(ack.ReasonCode))
	}
	return r
}

// v3RawConnectWill connects a raw 3.1.1 client carrying a will.
func v3RawConnectWill(t *testing.T, addr, clientID string, w *packet.Will) *testutil.Raw {
	t.Helper()
	r := v3Raw(t, addr)
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: clientID, KeepAlive: 30, Will: w})
	ack, ok := r.Read().(*packet.Connack)
	if !ok || ack.ReasonCode != 0 {
		t.Fatalf("%q: want CONNACK 0, got %#v", clientID, ack)
	}
	return r
}

// v3RawSub subscribes a raw client and checks the granted QoS.
func v3RawSub(t *testing.T, r *testutil.Raw, id uint16, filter string, qos byte) {
	t.Helper()
	r.Send(&packet.Subscribe{PacketID: id, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}})
	sa, ok := r.Read().(*packet.Suback)
	if !ok {
		t.Fatalf("expected SUBACK")
	}
	if sa.PacketID != id || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != packet.ReasonCode(qos) {
		t.Fatalf("SUBACK id %d codes %v, want id %d [%d]", sa.PacketID, sa.ReasonCodes, id, qos)
	}
}

// v3RawExpectPublish reads the next packet and checks it is the PUBLISH.
func v3RawExpectPublish(t *testing.T, r *testutil.Raw, topic, payload string, qos byte) *packet.Publish {
	t.Helper()
	p := r.Read()
	pub, ok := p.(*packet.Publish)
	if !ok {
		t.Fatalf("expected PUBLISH, got %T %+v", p, p)
	}
	if pub.Topic != topic || string(pub.Payload) != payload || pub.QoS != qos {
		t.Fatalf("got PUBLISH %q %q qos %d, want %q %q qos %d", pub.Topic, pub.Payload, pub.QoS, topic, payload, qos)
	}
	return pub
}

// v3RawExpectNothing asserts no packet arrives within d (and the connection
// stays open).
func v3RawExpectNothing(t *testing.T, r *testutil.Raw, d time.Duration) {
	t.Helper()
	p, err := r.Next(d)
	if err == nil {
		t.Fatalf("unexpected packet %T %+v", p, p)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("connection ended: %v", err)
	}
}

// v3Watcher subscribes a fresh paho client to filter at QoS 2 so a test can
// see what the broker publishes (wills, retained messages).
func v3Watcher(t *testing.T, addr, clientID, filter string) *v3Client {
	t.Helper()
	w := v3Connect(t, addr, clientID, nil)
	w.sub(filter, 2)
	return w
}

// v3SocketConnect sends CONNECT on a plain socket, checks CONNACK 0 and
// returns the socket, so a test can close it without DISCONNECT (Raw keeps
// its connection to itself).
func v3SocketConnect(t *testing.T, addr string, cp *packet.Connect) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, v3Wait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	b, err := packet.Append(nil, cp, cp.ProtocolVersion)
	if err != nil {
		t.Fatalf("encode CONNECT: %v", err)
	}
	nc.SetDeadline(time.Now().Add(v3Wait))
	if _, err := nc.Write(b); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	br := bufio.NewReader(nc)
	fh, err := packet.ReadFixedHeader(br)
	if err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	p, err := packet.Decode(fh, body, cp.ProtocolVersion)
	if ack, ok := p.(*packet.Connack); err != nil || !ok || ack.ReasonCode != 0 {
		t.Fatalf("want CONNACK 0, got %#v (%v)", p, err)
	}
	nc.SetDeadline(time.Time{})
	return nc
}
