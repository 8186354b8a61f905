package integration

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// Self-checking payloads for the pooled-message tests: a message carries
// its topic, publisher and sequence number, bytes derived from them and a
// checksum, so a subscriber can tell at once a payload that is not the
// one published on that topic (a buffer reused while still referenced
// shows up as another message's bytes or topic).

// integritySizes are the filler lengths used in turn: across bufpool's
// size classes and their edges, and one above its largest (not pooled).
var integritySizes = []int{0, 1, 17, 40, 47, 48, 100, 300, 1000, 1011, 1100, 2500, 4000, 4096, 9000, 16000, 70000}

// integrityPayload is the payload publisher pub sends as message seq on
// topic.
func integrityPayload(topic string, pub, seq int) []byte {
	n := integritySizes[(seq*5+pub)%len(integritySizes)]
	if n > 16000 && seq%7 != 0 {
		n = 64 // the largest only now and then
	}
	b := make([]byte, 0, 2+len(topic)+8+n+4)
	b = binary.BigEndian.AppendUint16(b, uint16(len(topic)))
	b = append(b, topic...)
	b = binary.BigEndian.AppendUint32(b, uint32(pub))
	b = binary.BigEndian.AppendUint32(b, uint32(seq))
	for i := range n {
		b = append(b, byte(pub*131+seq*7+i))
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

// checkIntegrity tells whether payload is exactly what integrityPayload
// made for topic, and whose message it is.
func checkIntegrity(topic string, payload []byte) (pub, seq int, err error) {
	if len(payload) < 2 {
		return 0, 0, fmt.Errorf("topic %q: payload of %d bytes", topic, len(payload))
	}
	tl := int(binary.BigEndian.Uint16(payload))
	if len(payload) < 2+tl+8+4 {
		return 0, 0, fmt.Errorf("topic %q: payload of %d bytes too short", topic, len(payload))
	}
	if got := string(payload[2 : 2+tl]); got != topic {
		return 0, 0, fmt.Errorf("topic %q: payload published on %q", topic, got)
	}
	pub = int(binary.BigEndian.Uint32(payload[2+tl:]))
	seq = int(binary.BigEndian.Uint32(payload[2+tl+4:]))
	if want := integrityPayload(topic, pub, seq); !bytes.Equal(payload, want) {
		return pub, seq, fmt.Errorf("topic %q: publisher %d message %d altered (%d bytes, want %d)", topic, pub, seq, len(payload), len(want))
	}
	return pub, seq, nil
}

// icli is a minimal MQTT client for these tests, safe to use from
// goroutines (it reports errors instead of failing the test).
type icli struct {
	nc      net.Conn
	br      *bufio.Reader
	v       byte
	wmu     sync.Mutex
	aliases map[uint16]string // the broker's topic aliases (v5)
}

// dialInteg connects with CONNECT cp (its protocol fields are filled in).
// rcvBuf, when > 0, shrinks the socket's receive buffer: a subscriber that
// reads slowly then fills the broker's queues soon.
func dialInteg(addr string, v byte, cp packet.Connect, rcvBuf int) (*icli, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	if rcvBuf > 0 {
		nc.(*net.TCPConn).SetReadBuffer(rcvBuf)
	}
	c := &icli{nc: nc, br: bufio.NewReader(nc), v: v}
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", v
	// Keep alive stays 0 (off) unless asked: these clients send nothing
	// while they only read, and a slow -race run can read for longer than
	// one and a half keep-alive periods (0x8D Keep Alive timeout).
	if err := c.send(&cp); err != nil {
		nc.Close()
		return nil, nil, err
	}
	p, err := c.next(time.Minute)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: CONNACK: %w", cp.ClientID, err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReasonCode != 0 {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: CONNACK %+v", cp.ClientID, p)
	}
	return c, ack, nil
}

func (c *icli) send(ps ...packet.Packet) error {
	var buf []byte
	for _, p := range ps {
		var err error
		if buf, err = packet.Append(buf, p, c.v); err != nil {
			return fmt.Errorf("encode %T: %w", p, err)
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(2 * time.Minute))
	_, err := c.nc.Write(buf)
	return err
}

func (c *icli) next(d time.Duration) (packet.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	fh, err := packet.ReadFixedHeader(c.br)
	if err != nil {
		return nil, err
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, err
	}
	return packet.Decode(fh, body, c.v)
}

// subscribe sends SUBSCRIBE and waits for its SUBACK.
func (c *icli) subscribe(s *packet.Subscribe) error {
	if err := c.send(s); err != nil {
		return err
	}
	p, err := c.next(time.Minute)
	if err != nil {
		return fmt.Errorf("SUBACK: %w", err)
	}
	if sa, ok := p.(*packet.Suback); !ok || sa.ReasonCodes[0] >= 0x80 {
		return fmt.Errorf("SUBACK expected, got %+v", p)
	}
	return nil
}

// tally is what one subscriber received: every message checked, counted
// by publisher and sequence number.
type tally struct {
	name string
	mu   sync.Mutex
	got  map[[2]int]int
	n    int
	bad  []string
	cond *sync.Cond
	// ended: its connection ended, nothing more will come.
	ended bool
}

// end notes that nothing more will come.
func (t *tally) end() {
	t.mu.Lock()
	t.ended = true
	t.cond.Broadcast()
	t.mu.Unlock()
}

func newTally(name string) *tally {
	t := &tally{name: name, got: map[[2]int]int{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

func (t *tally) fail(format string, a ...any) {
	t.mu.Lock()
	if len(t.bad) < 20 {
		t.bad = append(t.bad, t.name+": "+fmt.Sprintf(format, a...))
	}
	t.mu.Unlock()
}

// integCorr is the correlation data an MQTT 5 publisher sends with some
// messages (it lives in the same pooled buffer as the payload), and their
// expiry: an expiry makes each delivery encoded apart.
func integCorr(pub, seq int) ([]byte, *uint32) {
	if pub%2 == 0 || seq%3 != 0 {
		return nil, nil
	}
	e := uint32(3600)
	return []byte(fmt.Sprintf("corr/%d/%d", pub, seq)), &e
}

func (t *tally) add(topic string, payload []byte) { t.addProps(topic, payload, nil) }

// addProps is add for an MQTT 5 delivery, whose properties are checked too.
func (t *tally) addProps(topic string, payload []byte, props *packet.Properties) {
	pub, seq, err := checkIntegrity(topic, payload)
	if err != nil {
		t.fail("%v", err)
		return
	}
	if props != nil && pub < 100 {
		want, exp := integCorr(pub, seq)
		if !bytes.Equal(props.CorrelationData, want) || (exp == nil) != (props.MessageExpiry == nil) {
			t.fail("topic %q: publisher %d message %d: correlation data %q, expiry %v; want %q", topic, pub, seq, props.CorrelationData, props.MessageExpiry != nil, want)
			return
		}
	}
	t.mu.Lock()
	t.got[[2]int{pub, seq}]++
	t.n++
	t.cond.Broadcast()
	t.mu.Unlock()
}

func (t *tally) errs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.bad...)
}

// receive reads publishes until the connection ends or stop is closed
// (which closes it: a read deadline could cut a packet in two), checking
// each, acknowledging QoS 1 and 2, and calling pace (if set) after each
// packet (a slow reader). It returns why it stopped (nil for stop).
func (c *icli) receive(t *tally, stop <-chan struct{}, pace func()) error {
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		select {
		case <-stop:
			c.nc.Close()
		case <-ended:
		}
	}()
	for {
		p, err := c.next(time.Hour)
		if err != nil {
			select {
			case <-stop:
				return nil
			default:
			}
			return err
		}
		switch p := p.(type) {
		case *packet.Publish:
			topic := p.Topic
			if a := p.Properties.TopicAlias; a != nil {
				if c.aliases == nil {
					c.aliases = map[uint16]string{}
				}
				if topic == "" {
					topic = c.aliases[*a]
				} else {
					c.aliases[*a] = topic
				}
			}
			if c.v == packet.V5 {
				t.addProps(topic, p.Payload, &p.Properties)
			} else {
				t.add(topic, p.Payload)
			}
			switch p.QoS {
			case 1:
				err = c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
			case 2:
				err = c.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
			}
		case *packet.Ack:
			if p.Kind == packet.PUBREL {
				err = c.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
			}
		case *packet.Disconnect:
			return fmt.Errorf("DISCONNECT 0x%02x", p.ReasonCode)
		}
		if err != nil {
			select {
			case <-stop:
				return nil // an acknowledgement cut by the close
			default:
			}
			return err
		}
		if pace != nil {
			pace()
		}
	}
}

// ipub publishes self-checking messages and completes their QoS 1 and 2
// flows, with at most window unacknowledged.
type ipub struct {
	c       *icli
	id      int
	aliases map[string]uint16 // v5: topics given an alias
	aliasMx uint16
	sem     chan struct{}
	nextID  uint16
	done    chan error
}

func newIPub(c *icli, id int, aliasMax uint16, window int) *ipub {
	p := &ipub{c: c, id: id, aliasMx: aliasMax, sem: make(chan struct{}, window), done: make(chan error, 1)}
	go func() {
		for {
			pk, err := c.next(time.Hour)
			if err != nil {
				p.done <- err
				return
			}
			if a, ok := pk.(*packet.Ack); ok {
				switch a.Kind {
				case packet.PUBACK, packet.PUBCOMP:
					<-p.sem
				case packet.PUBREC:
					err = c.send(&packet.Ack{Kind: packet.PUBREL, PacketID: a.PacketID})
				}
			}
			if err != nil {
				p.done <- err
				return
			}
		}
	}()
	return p
}

// publish sends one message (as a v5 topic alias when the broker allows).
func (p *ipub) publish(topic string, seq int, qos byte, retain bool) error {
	pk := &packet.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: integrityPayload(topic, p.id, seq)}
	if p.c.v == packet.V5 {
		pk.Properties.CorrelationData, pk.Properties.MessageExpiry = integCorr(p.id, seq)
	}
	if qos > 0 {
		select {
		case p.sem <- struct{}{}:
		case err := <-p.done:
			return fmt.Errorf("publisher %d: %v", p.id, err)
		}
		p.nextID++
		if p.nextID == 0 {
			p.nextID = 1
		}
		pk.PacketID = p.nextID
	}
	if p.c.v == packet.V5 && p.aliasMx > 0 {
		if a, ok := p.aliases[topic]; ok {
			pk.Topic, pk.Properties.TopicAlias = "", &a
		} else if len(p.aliases) < int(p.aliasMx) {
			if p.aliases == nil {
				p.aliases = map[string]uint16{}
			}
			a := uint16(len(p.aliases) + 1)
			p.aliases[topic] = a
			pk.Properties.TopicAlias = &a
		}
	}
	return p.c.send(pk)
}

// drain waits until every QoS 1 and 2 publish is acknowledged.
func (p *ipub) drain() error {
	for range cap(p.sem) {
		select {
		case p.sem <- struct{}{}:
		case err := <-p.done:
			return fmt.Errorf("publisher %d: %v", p.id, err)
		}
	}
	for range cap(p.sem) {
		<-p.sem
	}
	return nil
}
