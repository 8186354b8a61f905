package clusterfault

import (
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Client3 is an MQTT 3.1.1 persistent subscriber (paho.mqtt.golang): clean
// session off, reconnecting by itself to the first of its nodes that
// answers, subscribing again on each connect as applications of that
// library do. It subscribes at QoS 1: the library hands a QoS 2 message
// resent after its PUBREC to the application again, which would count
// against the broker.
type Client3 struct {
	Name string
	ID   uint8
	c    mqtt.Client
	h    *History
	up   atomic.Bool
}

// NewClient3 connects a 3.1.1 subscriber to topic at QoS 1, trying nodes
// in order, and keeps it connected until Close.
func NewClient3(h *History, name, topic string, nodes []*Node) *Client3 {
	c := &Client3{Name: name, ID: h.ID(name), h: h}
	o := mqtt.NewClientOptions().SetClientID(name).SetCleanSession(false).SetOrderMatters(true).
		SetKeepAlive(5 * time.Second).SetConnectTimeout(5 * time.Second).SetPingTimeout(5 * time.Second).
		SetAutoReconnect(true).SetMaxReconnectInterval(500 * time.Millisecond).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond)
	for _, n := range nodes {
		o.AddBroker("tcp://" + n.MQTT)
	}
	// The handler is the default one, set before connecting: a resumed
	// session's queued messages can arrive before the SUBACK, and the
	// library acknowledges and drops a message no handler takes.
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		pub, seq, ok := ParsePayload(m.Payload())
		if ok {
			c.h.Add(Event{Kind: Deliver, Client: c.ID, Pub: pub, Seq: seq, QoS: m.Qos(), Dup: m.Duplicate()})
		}
	})
	o.SetOnConnectHandler(func(cl mqtt.Client) {
		c.h.Add(Event{Kind: Connected, Client: c.ID, Node: 255})
		tok := cl.Subscribe(topic, 1, nil)
		// Not waited for here: the library's handlers must not block.
		go func() {
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				c.h.Add(Event{Kind: Subscribed, Client: c.ID, Node: 255})
				c.up.Store(true)
			}
		}()
	})
	o.SetConnectionLostHandler(func(mqtt.Client, error) {
		c.up.Store(false)
		c.h.Add(Event{Kind: Disconnected, Client: c.ID, Node: 255})
	})
	c.c = mqtt.NewClient(o)
	c.c.Connect() // with ConnectRetry, it keeps trying in the background
	return c
}

// Up reports whether the client is connected and subscribed.
func (c *Client3) Up() bool { return c.up.Load() && c.c.IsConnectionOpen() }

// Close disconnects the client.
func (c *Client3) Close() { c.c.Disconnect(250) }
