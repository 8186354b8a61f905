package clusterfault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// Client is an MQTT 5 client (paho.golang, not Starling's code) that keeps
// itself connected: when its connection ends it tries its nodes again in
// order of preference. A persistent client connects with clean start off
// and a session expiry, and keeps its session state (inflight messages,
// received QoS 2 packet IDs) across connections, as a real client that
// resumes must. Everything it sends and receives goes to a History.
type Client struct {
	Name       string
	ID         uint8
	Nodes      []*Node // in order of preference; one: pinned
	Persistent bool
	Subs       []paho.SubscribeOptions

	h     *History
	state *state.State // persistent clients: kept across connections

	mu        sync.Mutex
	cur       *paho.Client
	node      *Node
	up        chan struct{} // closed while connected
	subbed    bool          // a persistent client's session holds its subscriptions
	sessLost  int           // persistent sessions the broker did not have on reconnecting
	refusals  int
	connects  int
	lastError string

	nextSeq atomic.Uint32 // publishers: the next sequence number to send
}

// NewClient prepares a client; Run connects it.
func NewClient(h *History, name string, persistent bool, nodes []*Node, subs ...paho.SubscribeOptions) *Client {
	c := &Client{Name: name, ID: h.ID(name), Nodes: nodes, Persistent: persistent, Subs: subs, h: h, up: make(chan struct{})}
	if persistent {
		c.state = state.NewInMemory()
	}
	c.nextSeq.Store(1)
	return c
}

// Connected returns the client and node of the current connection, nil if
// there is none.
func (c *Client) Connected() (*paho.Client, *Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.node
}

// Status describes the client for failure messages.
func (c *Client) Status() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	on := "not connected"
	if c.node != nil {
		on = "on " + c.node.Name
	}
	s := fmt.Sprintf("%s %s (%d connects, %d refused, %d sessions not found on reconnecting)", c.Name, on, c.connects, c.refusals, c.sessLost)
	if c.cur == nil && c.lastError != "" {
		s += ", last error: " + c.lastError
	}
	return s
}

// SessionsLost counts reconnects of a persistent client that found no
// session although it had one.
func (c *Client) SessionsLost() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessLost
}

// wait returns the current connection, waiting for one; nil once ctx ends.
func (c *Client) wait(ctx context.Context) *paho.Client {
	for {
		c.mu.Lock()
		cur, up := c.cur, c.up
		c.mu.Unlock()
		if cur != nil {
			return cur
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil
		}
	}
}

// Run keeps the client connected until ctx ends.
func (c *Client) Run(ctx context.Context) {
	for ctx.Err() == nil {
		pc, n := c.connectAny(ctx)
		if pc == nil {
			// Every node refused or is down: try again shortly; what we
			// wait for is a node coming back, which nothing signals.
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		c.mu.Lock()
		c.cur, c.node = pc, n
		close(c.up)
		c.mu.Unlock()
		select {
		case <-pc.Done():
		case <-ctx.Done():
			pc.Disconnect(&paho.Disconnect{})
			<-pc.Done()
		}
		c.mu.Lock()
		c.cur, c.node, c.up = nil, nil, make(chan struct{})
		c.mu.Unlock()
		c.h.Add(Event{Kind: Disconnected, Client: c.ID, Node: uint8(n.Index)})
	}
	if c.state != nil {
		c.state.Close()
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	c.lastError = err.Error()
	c.mu.Unlock()
}

// connectAny tries each node once, in order.
func (c *Client) connectAny(ctx context.Context) (*paho.Client, *Node) {
	for _, n := range c.Nodes {
		if ctx.Err() != nil {
			return nil, nil
		}
		pc, err := c.connect(ctx, n)
		if err == nil {
			return pc, n
		}
		c.fail(fmt.Errorf("%s: %w", n.Name, err))
	}
	return nil, nil
}

func (c *Client) connect(ctx context.Context, n *Node) (*paho.Client, error) {
	nc, err := net.DialTimeout("tcp", n.MQTT, 2*time.Second)
	if err != nil {
		return nil, err
	}
	st := c.state
	if st == nil {
		st = state.NewInMemory()
	}
	cfg := paho.ClientConfig{
		ClientID: c.Name,
		Conn:     nc,
		Session:  st,
		// A publish waits this long for its acknowledgement, across
		// reconnects (the session resends it); then its outcome is
		// unknown.
		PacketTimeout: 30 * time.Second,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.received(pr.Packet)
			return true, nil
		}},
	}
	pc := paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: c.Name, CleanStart: !c.Persistent, KeepAlive: 5}
	if c.Persistent {
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	// A node that is paused accepts the TCP connection but never answers.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ack, err := pc.Connect(cctx, cp)
	cancel()
	if err != nil {
		nc.Close()
		<-pc.Done()
		if ack != nil {
			c.mu.Lock()
			c.refusals++
			c.mu.Unlock()
			return nil, fmt.Errorf("refused with 0x%02x: %w", ack.ReasonCode, err)
		}
		if c.state == nil {
			st.Close()
		}
		return nil, err
	}
	c.mu.Lock()
	c.connects++
	resub := !c.Persistent || !c.subbed || !ack.SessionPresent
	if c.Persistent && c.subbed && !ack.SessionPresent {
		c.sessLost++
	}
	c.mu.Unlock()
	c.h.Add(Event{Kind: Connected, Client: c.ID, Node: uint8(n.Index), Present: ack.SessionPresent})
	if len(c.Subs) > 0 && resub {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sa, err := pc.Subscribe(sctx, &paho.Subscribe{Subscriptions: c.Subs})
		cancel()
		if err == nil {
			for _, r := range sa.Reasons {
				if r >= 0x80 {
					err = fmt.Errorf("subscription refused: 0x%02x", r)
				}
			}
		}
		if err != nil {
			pc.Disconnect(&paho.Disconnect{})
			nc.Close()
			<-pc.Done()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		c.mu.Lock()
		c.subbed = true
		c.mu.Unlock()
		c.h.Add(Event{Kind: Subscribed, Client: c.ID, Node: uint8(n.Index)})
	}
	return pc, nil
}

// Payload is what a publisher sends: its ID and the sequence number.
func Payload(pub uint8, seq uint32) []byte {
	return []byte(strconv.Itoa(int(pub)) + "/" + strconv.FormatUint(uint64(seq), 10))
}

// ParsePayload reverses Payload.
func ParsePayload(b []byte) (pub uint8, seq uint32, ok bool) {
	p, s, found := strings.Cut(string(b), "/")
	if !found {
		return 0, 0, false
	}
	pi, err1 := strconv.ParseUint(p, 10, 8)
	si, err2 := strconv.ParseUint(s, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uint8(pi), uint32(si), true
}

func (c *Client) received(p *paho.Publish) {
	pub, seq, ok := ParsePayload(p.Payload)
	if !ok {
		return
	}
	c.h.Add(Event{Kind: Deliver, Client: c.ID, Pub: pub, Seq: seq, QoS: p.QoS, Dup: p.Duplicate(), PacketID: p.PacketID})
}

// NextSeq is the sequence number the publisher sends next.
func (c *Client) NextSeq() uint32 { return c.nextSeq.Load() }

// Publish sends sequence numbers 1, 2, ... on topic at qos(seq), one at a time
// and at most one per interval, until ctx ends. A message the library
// could not take (no connection) is sent again; any other failure leaves
// its outcome unknown and the next number is sent.
func (c *Client) Publish(ctx context.Context, topic string, qosOf func(seq uint32) byte, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		pc := c.wait(ctx)
		if pc == nil {
			return
		}
		seq := c.nextSeq.Load()
		qos := qosOf(seq)
		c.h.Add(Event{Kind: Send, Client: c.ID, Pub: c.ID, QoS: qos, Seq: seq})
		r, err := pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: Payload(c.ID, seq)})
		if err == nil && r != nil && r.ReasonCode >= 0x80 {
			err = fmt.Errorf("reason 0x%02x", r.ReasonCode)
		}
		switch {
		case err == nil:
			c.h.Add(Event{Kind: Ack, Client: c.ID, Pub: c.ID, QoS: qos, Seq: seq})
			c.nextSeq.Add(1)
		case errors.Is(err, session.ErrNoConnection):
			// Never stored, so never sent: the same number goes again.
			c.h.Add(Event{Kind: Fail, Client: c.ID, Pub: c.ID, QoS: qos, Seq: seq})
		default:
			c.h.Add(Event{Kind: Fail, Client: c.ID, Pub: c.ID, QoS: qos, Seq: seq})
			c.fail(fmt.Errorf("publish %d: %w", seq, err))
			c.nextSeq.Add(1)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Visit connects a persistent client that is otherwise offline to its
// first node, stays connected (reconnecting if the connection ends) until
// done reports true or ctx ends, and disconnects, leaving its session to
// collect messages again.
func (c *Client) Visit(ctx context.Context, done func() bool) error {
	n := c.Nodes[0]
	for {
		pc, err := c.connect(ctx, n)
		if err != nil {
			c.fail(err)
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: connect to %s: %w (last error: %v)", c.Name, n.Name, ctx.Err(), err)
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		c.mu.Lock()
		c.cur, c.node = pc, n
		c.mu.Unlock()
		ended := false
		for !ended && !done() && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-pc.Done():
				ended = true
			case <-time.After(50 * time.Millisecond):
			}
		}
		if !ended {
			pc.Disconnect(&paho.Disconnect{})
		}
		<-pc.Done()
		c.mu.Lock()
		c.cur, c.node = nil, nil
		c.mu.Unlock()
		c.h.Add(Event{Kind: Disconnected, Client: c.ID, Node: uint8(n.Index)})
		if !ended {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			return nil
		}
	}
}
