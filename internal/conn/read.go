package conn

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"github.com/starling-mqtt/starling/internal/bufpool"
	"github.com/starling-mqtt/starling/internal/packet"
)

// ReadPacket reads and decodes the next packet. deadline, when non-zero,
// bounds how long to wait for it (keep alive, connect timeout). A QoS 0
// PUBLISH it returns is the connection's own value, valid until the next
// call (or Park), and so is a short acknowledgement: the caller must copy
// what it keeps.
func (c *Conn) ReadPacket(deadline time.Time) (packet.Packet, int, error) {
	// A packet already whole in the read buffer needs no system call: no
	// deadline is set for it (none can expire while nothing is read), and
	// the socket keeps the last one until a read needs a new one.
	ready := c.PacketReady()
	c.mu.Lock()
	for len(c.queue) >= MaxPending && !c.closed && !c.closing {
		c.waitDrainedLocked()
	}
	if c.lingering {
		c.mu.Unlock()
		return nil, 0, net.ErrClosed
	}
	if !ready {
		// Under mu: once linger has set its deadline, none is set here.
		if err := c.nc.SetReadDeadline(deadline); err != nil {
			c.mu.Unlock()
			return nil, 0, err
		}
	}
	c.mu.Unlock()
	if err := c.readFirst(); err != nil {
		return nil, 0, err
	}
	// A started packet whose rest is not buffered yet gets PacketTimeout
	// from now; a whole packet already in the buffer costs nothing here.
	var until time.Time
	if c.sh.PacketTimeout > 0 && !c.packetBuffered() {
		until = c.packetDeadline(deadline)
	}
	fh, err := packet.ReadFixedHeader((*headReader)(c))
	if err != nil {
		return nil, 0, packetErr(err, until)
	}
	size := 1 + varintLen(fh.Remaining) + fh.Remaining
	if uint64(size) > uint64(c.maxIn) {
		// [MQTT-3.2.2-15] a packet above our Maximum Packet Size; the body is
		// never read, so no allocation follows from its length.
		return nil, size, ErrTooLarge
	}
	// A QoS 0 PUBLISH is read into a pooled buffer and decoded into the
	// connection's own Publish value: the broker hands the buffer to the
	// message it becomes (TakeBody), and a publisher that keeps to its
	// topic costs no allocation. Anything else is decoded as it comes.
	// Bodies up to bufpool.Max (128 KiB: a 64 KiB payload with its topic
	// and properties) are pooled; the buffer is taken before the body
	// arrives, as readBody's first 64 KiB step is, and PacketTimeout
	// bounds how long a trickling sender holds it. A large body is read
	// past the read buffer, straight into the pooled one (bufio reads
	// directly into a destination larger than its buffer once empty).
	pub := fh.Type == packet.PUBLISH && fh.Flags&0x06 == 0 && fh.Remaining <= bufpool.Max
	// A short acknowledgement (no properties) is read into the same state
	// and decoded into its Ack value.
	ack := fh.Type >= packet.PUBACK && fh.Type <= packet.PUBCOMP && fh.Remaining <= len(pubState{}.ab)
	if c.pub != nil {
		c.pub.body = nil
	}
	if (pub || ack) && c.pub == nil {
		c.pub = pubPool.Get().(*pubState)
	}
	var body []byte
	switch {
	case pub:
		c.pub.body = bufpool.Get(fh.Remaining)
		body = *c.pub.body
		_, err = io.ReadFull(c.br, body)
	case ack:
		body = c.pub.ab[:fh.Remaining]
		_, err = io.ReadFull(c.br, body)
	default:
		body, err = readBody(c.br, fh.Remaining)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		c.putBody()
		return nil, size, packetErr(err, until)
	}
	if t := c.sh.Totals; t != nil {
		t.BytesIn.Add(uint64(size))
	}
	lingering := false
	if !ready {
		// A read from the socket may have raced linger; a packet that was
		// buffered whole was checked above.
		c.mu.Lock()
		lingering = c.lingering
		c.mu.Unlock()
	}
	if lingering {
		// Read while the connection was being closed: not handled.
		c.putBody()
		return nil, size, net.ErrClosed
	}
	if pub {
		if err := packet.DecodePublish(&c.pub.p, fh, body, c.Version(), &c.pub.last); err != nil {
			c.putBody()
			return nil, size, err
		}
		return &c.pub.p, size, nil
	}
	if ack {
		if err := packet.DecodeAck(&c.pub.a, fh, body, c.Version()); err != nil {
			return nil, size, err
		}
		return &c.pub.a, size, nil
	}
	p, err := packet.Decode(fh, body, c.Version())
	return p, size, err
}

// TakeBody hands the caller the pooled buffer the last packet ReadPacket
// returned was read into, nil if it was not pooled or was taken already:
// its owner gives it back (bufpool.Put) once nothing refers to it. A
// buffer not taken is left to the collector, since the packet may still
// refer to it.
func (c *Conn) TakeBody() *[]byte {
	if c.pub == nil {
		return nil
	}
	b := c.pub.body
	c.pub.body = nil
	return b
}

// putBody gives back the pooled buffer of a packet that was not returned.
func (c *Conn) putBody() {
	if c.pub != nil && c.pub.body != nil {
		bufpool.Put(c.pub.body)
		c.pub.body = nil
	}
}

// ErrPacketTimeout is returned by ReadPacket for a packet not completed
// within PacketTimeout; MQTT 5 clients are told 0x97 (an administrative
// limit exceeded).
var ErrPacketTimeout = &packet.Error{Code: packet.QuotaExceeded, Reason: "packet not completed within limits.packet_timeout"}

// packetBuffered reports whether the rest of the packet whose first byte
// readFirst just read (its remaining length, then its body) is in the
// read buffer, without reading from the socket.
func (c *Conn) packetBuffered() bool {
	n := c.br.Buffered()
	b, _ := c.br.Peek(min(n, 4))
	rem, mult := 0, 1
	for i, x := range b {
		rem += int(x&0x7f) * mult
		if x&0x80 == 0 {
			return n-(i+1) >= rem
		}
		mult *= 128
	}
	return false
}

// packetDeadline sets the read deadline of a packet started now to
// PacketTimeout from now, unless deadline comes first; it returns the
// deadline it set, or zero when deadline stays in force.
func (c *Conn) packetDeadline(deadline time.Time) time.Time {
	d := time.Now().Add(c.sh.PacketTimeout)
	if !deadline.IsZero() && !d.Before(deadline) {
		return time.Time{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lingering || c.nc.SetReadDeadline(d) != nil {
		return time.Time{}
	}
	return d
}

// packetErr reports a timeout of the deadline packetDeadline set (until)
// as ErrPacketTimeout.
func packetErr(err error, until time.Time) error {
	var ne net.Error
	if !until.IsZero() && errors.As(err, &ne) && ne.Timeout() {
		return ErrPacketTimeout
	}
	return err
}

// headReader is the ByteReader a packet's fixed header is read from: the
// first byte readFirst read (one), then the read buffer. A conversion of
// the Conn, so that it costs no field.
type headReader Conn

func (h *headReader) ReadByte() (byte, error) {
	if !h.oneUsed {
		h.oneUsed = true
		return h.one[0], nil
	}
	return h.br.ReadByte()
}

// readFirst reads the first byte of the next packet: from the read buffer
// when it holds more input, else straight from the socket with the buffer
// back in the pool, so that a connection waiting for a packet holds none.
// The buffer is taken again once the byte has arrived.
func (c *Conn) readFirst() error {
	if c.br != nil && c.br.Buffered() > 0 {
		c.one[0], _ = c.br.ReadByte()
		c.oneUsed = false
		return nil
	}
	if c.ready {
		// Park saw input waiting: read it through a buffer, one system
		// call for as many packets as have arrived.
		c.ready = false
		c.takeReader()
		b, err := c.br.ReadByte()
		if err != nil {
			return err
		}
		c.one[0], c.oneUsed = b, false
		return nil
	}
	c.releaseReader()
	if _, err := io.ReadFull(c.nc, c.one[:]); err != nil {
		return err
	}
	c.takeReader()
	c.oneUsed = false
	return nil
}

// takeReader takes a read buffer from the pools if the connection has
// none, or a larger one if its last reads filled the one it has.
// It is called between packets, when the buffer holds no input.
func (c *Conn) takeReader() {
	if c.filled && int(c.rsize) < len(readBufSizes)-1 {
		if c.releaseReader(); c.br == nil {
			c.rsize++
		}
	}
	c.filled = false
	if c.br != nil {
		return
	}
	if v := readerPools[c.rsize].Get(); v != nil {
		c.br = v.(*bufio.Reader)
	} else {
		c.br = bufio.NewReaderSize(nil, readBufSizes[c.rsize])
	}
	c.br.Reset((*fillReader)(c))
}

// releasePub gives back the PUBLISH decoding state of a connection that
// parks (its caller is done with the packet it read last).
func (c *Conn) releasePub() {
	if c.pub != nil {
		*c.pub = pubState{}
		pubPool.Put(c.pub)
		c.pub = nil
	}
}

// releaseReader puts an empty read buffer back in the pool.
func (c *Conn) releaseReader() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readerPools[c.rsize].Put(c.br)
		c.br = nil
	}
}

// PacketReady reports whether a whole packet waits in the read buffer:
// the next ReadPacket returns it without reading from the socket, and so
// without waiting.
func (c *Conn) PacketReady() bool {
	if c.br == nil {
		return false
	}
	n := c.br.Buffered()
	if n < 2 {
		return false
	}
	b, _ := c.br.Peek(min(n, 5))
	rem, mult := 0, 1
	for i, x := range b[1:] {
		rem += int(x&0x7f) * mult
		if x&0x80 == 0 {
			return n-(i+2) >= rem
		}
		mult *= 128
	}
	return false
}

// Buffered reports whether input has been read from the socket and not yet
// decoded: the next ReadPacket then needs no read from the socket.
func (c *Conn) Buffered() bool { return c.br != nil && c.br.Buffered() > 0 }

// readBody reads n bytes. A body up to bufpool.Max is allocated whole, as
// a pooled QoS 0 body is taken whole (PacketTimeout bounds how long a
// trickling sender holds it): one allocation, one clearing, no copy, for
// a QoS 1 or 2 PUBLISH of 64 KiB and its topic. Above that, memory
// follows the bytes that actually arrive, so a header that announces a
// large packet and then trickles costs little.
func readBody(r io.Reader, n int) ([]byte, error) {
	const step = bufpool.Max
	if n <= step {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, step)
	for len(b) < n {
		if len(b) == cap(b) {
			b = append(b, make([]byte, min(cap(b), n-len(b)))...)[:len(b)]
		}
		m, err := r.Read(b[len(b):min(cap(b), n)])
		b = b[:len(b)+m]
		if err != nil && len(b) < n {
			return nil, err
		}
	}
	return b, nil
}

func varintLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	}
	return 4
}
