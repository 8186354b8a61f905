// Package conn runs one MQTT network connection: a reader that decodes
// packets on the caller's goroutine and a writer goroutine that drains a
// queue and flushes each batch with one write. It knows packets and bytes,
// not sessions or brokers.
package conn

import (
	"bufio"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/poll"
)

// MaxPendingQoS0 is the number of QoS 0 publishes waiting for a slow client
// past which the connection says it is Full: the broker then holds back the
// publishers that feed it. Past HardLimit times it (or times MaxQueuedBytes),
// or past it under a drop policy (Shed), they are dropped and counted.
// QoS 1/2 are bounded by the inflight window.
const MaxPendingQoS0 = 1024

// HardLimit is how many times its bounds the QoS 0 queue of a connection
// may grow with deliveries from sources the broker cannot hold back (other
// cluster nodes, wills, the API); deliveries from held publishers are
// bounded by what those hold, and kept.
const HardLimit = 4

// HeldLimit is the safety net above HardLimit for deliveries from held
// publishers: each adds a bounded number, and reaching it takes hundreds of
// them at once.
const HeldLimit = 16

// Shed policies for QoS 0 publishes past the bound (SetShed).
const (
	ShedNone   = iota // keep them, up to HardLimit times the bound
	ShedNewest        // drop the newest
	ShedOldest        // drop the oldest queued
)

// MaxPending bounds the packets queued for a client that does not read what
// the broker sends: past it the connection's reader stops reading until the
// writer has taken the queue, so its replies cannot pile up in memory.
const MaxPending = 4096

// writeTimeout bounds one flush: a client that reads nothing for this long is
// cut off instead of holding memory.
const writeTimeout = 30 * time.Second

var bufPool = sync.Pool{New: func() any { return &wbuf{b: make([]byte, 0, 4096)} }}

// wbuf is a writer's pooled state for one flush: the buffer packets are
// encoded into and, on a TCP socket, the pieces of a vectored write whose
// large payloads are sent from where they lie rather than copied into b.
type wbuf struct {
	b    []byte
	iov  net.Buffers     // pieces waiting for the next write: parts of b, payloads
	mark int             // b[mark:] is not in iov yet
	held []packet.Packet // deliveries whose payloads iov references: released once written
}

// readerPools hold the read buffers of connections that are between
// packets, by size: an idle connection waits for its next first byte
// without one. A connection starts with the smallest; one whose reads
// fill its buffer takes the next size when it takes a buffer again, so a
// busy publisher drains more packets per system call, and it is back to
// the smallest once parked.
var readerPools [len(readBufSizes)]sync.Pool

var readBufSizes = [...]int{1 << 10, 4 << 10, 16 << 10}

// fillReader is what a connection's read buffer reads from: its socket,
// noting reads that fill the buffer (more input was probably waiting). A
// conversion of the Conn, so that it costs no field.
type fillReader Conn

func (f *fillReader) Read(p []byte) (int, error) {
	n, err := f.nc.Read(p)
	if n == len(p) && n > 0 {
		f.filled = true
	}
	return n, err
}

// pubState is what a connection decodes QoS 0 PUBLISHes and short
// acknowledgements with, pooled: an idle connection holds none.
type pubState struct {
	p  packet.Publish
	a  packet.Ack
	ab [4]byte // an acknowledgement's body: identifier, reason, no properties
	// last is the last decoded topic, reused while it repeats.
	last string
	// body is the pooled buffer of the last PUBLISH, until taken.
	body *[]byte
}

var pubPool = sync.Pool{New: func() any { return new(pubState) }}

// Conn is one client connection.
type Conn struct {
	nc net.Conn
	br *bufio.Reader // pooled; nil while no input is buffered
	// one is the first byte of the packet being read (read into without
	// a buffer: no allocation per read); headReader returns it, unless
	// oneUsed, then reads from br.
	one     [1]byte
	oneUsed bool
	// reason is the MQTT reason of the DISCONNECT that CloseAfter queued
	// (-1: none); a WebSocket closes with the matching close code. Under
	// mu; here, it takes the padding before maxIn.
	reason int16
	maxIn  uint32 // largest accepted packet, fixed header included

	// pub is what QoS 0 PUBLISHes and short acknowledgements are decoded
	// into, from pubPool until the connection parks: the packet
	// ReadPacket returns is valid until its next call.
	pub    *pubState
	rsize  uint8 // index in readBufSizes of br's size
	filled bool  // a read filled br since it was taken (fillReader)
	// ready: Park saw input waiting on the socket, so the next read
	// cannot block and may take a buffer at once.
	ready bool
	shed  uint8 // ShedNone, ShedNewest or ShedOldest; under mu

	version atomic.Uint32 // protocol level, set after CONNECT

	mu      sync.Mutex
	queue   []packet.Packet
	qos0Len int         // topic and payload bytes of the QoS 0 publishes in queue
	full    atomic.Bool // the QoS 0 queue is at its bound (Full)
	pongs   uint8       // PINGRESPs to write ahead of the queue (SendPong); in full's padding
	fd      int32       // a released socket's descriptor (park.go)
	// latest maps a topic to the queue index of its latest-value QoS 0
	// publish, for conflation; reset when the writer takes the queue.
	latest  map[string]int
	closing bool // flush what is queued, then close
	closed  bool
	// lingering: the reason was sent and input is being discarded; no
	// packet is read any more.
	lingering bool
	writing   bool // a writer goroutine is running
	released  bool // parked as the bare descriptor fd (park.go)
	relOnStop bool // parked while the writer ran: release when it stops
	busy      bool // input woke it within ReleaseAfter of parking
	// asleep: parked, and the owner's Resume has not been called yet.
	asleep bool
	// bufs holds the queue's storage and the spare slice the writer swaps
	// with it while there is something to write; nil when idle.
	bufs    *queueBufs
	writer  func()       // writeLoop as a value made once: "go c.writer()" allocates nothing
	parked  *poll.Waiter // the last Park's; woken when the socket closes
	drained *sync.Cond   // signalled when the writer takes the queue or stops; made on first wait (waitDrainedLocked)
	// end is what only the connection's end uses; made on first use
	// (endLocked): an idle connection holds none of it.
	end  *ending
	fin  sync.Once
	qos0 int32 // QoS 0 publishes in queue (beside fin: no padding)

	// owner is told when the parked connection wakes and when the writer
	// takes queued publishes (SetOwner); nil: nobody.
	owner Owner
	// sh is the broker's settings and counters shared by its connections
	// (SetShared); never nil.
	sh *Shared
	// parkedAt is when the connection last parked (Unix nanoseconds).
	parkedAt int64

	// Dropped counts QoS 0 messages dropped for a slow reader.
	Dropped atomic.Uint64
	// Conflated counts QoS 0 latest-value publishes replaced by a newer one
	// of their topic before they were written.
	Conflated atomic.Uint64
}

// Owner is what a connection calls back. An interface, so that the owner
// (the broker's handler) passes itself: func values made per connection
// were live objects of every idle connection.
type Owner interface {
	// Resume carries on with the connection once it wakes from Park, on a
	// new goroutine that it may keep (it is the reader then); it should
	// call ReadPacket with the deadline given to Park.
	Resume()
	// Took is called (without the connection's lock) each time the writer
	// takes queued QoS 0 publishes to write (n of them), and with n 0 each
	// time the socket takes bytes: the client is making progress, and the
	// queue may have room again.
	Took(n int)
}

// SetOwner sets the connection's owner. Call it before use.
func (c *Conn) SetOwner(o Owner) { c.owner = o }

// Shared is what all the connections of a broker share: one pointer per
// connection rather than a copy of each field.
type Shared struct {
	// MaxQueuedBytes, when not 0, bounds the topic and payload bytes of
	// the QoS 0 publishes waiting in a connection's queue, as
	// MaxPendingQoS0 bounds their number (one is always let in, whatever
	// its size). The writer's current batch is not counted: about twice
	// this is held for a client that does not read.
	MaxQueuedBytes int
	// Totals, when not nil, also counts the connections' bytes (a
	// broker-wide sum for metrics).
	Totals *Totals
	// PacketTimeout, when not 0, bounds the time from a packet's first
	// byte to its last, whatever the deadline given to ReadPacket (keep
	// alive 0 gives none): past it ReadPacket returns ErrPacketTimeout, so
	// a started packet cannot hold memory for ever.
	PacketTimeout time.Duration
}

// noShared is the settings of a connection given none: no bounds, no
// totals.
var noShared Shared

// SetShared sets the settings and counters the connection shares with
// others (nil: none). Call it before use; s must not change afterwards.
func (c *Conn) SetShared(s *Shared) {
	if s == nil {
		s = &noShared
	}
	c.sh = s
}

// ending is the part of a connection that only its end uses.
type ending struct {
	stop chan struct{} // closed by Close: a gated wait gives up; made on first use
	done chan struct{} // closed once the socket is closed and no writer runs; made on first use
	pong chan struct{} // wakes a gated wait to write a PINGRESP; made by the first such wait
	// writeErr is the write error that closed the connection, if one did.
	writeErr error
}

// endLocked is c.end, made on first use. The caller holds mu.
func (c *Conn) endLocked() *ending {
	if c.end == nil {
		c.end = new(ending)
	}
	return c.end
}

// Totals are byte counts summed over connections.
type Totals struct {
	BytesIn, BytesOut atomic.Uint64
	Dropped           atomic.Uint64 // QoS 0 publishes dropped for slow readers
	// Queued is the topic and payload bytes of QoS 0 publishes waiting in
	// queues now.
	Queued atomic.Int64
	// Conflated counts QoS 0 latest-value publishes replaced by a newer one.
	Conflated atomic.Uint64
}

func (c *Conn) countOut(n int) {
	if t := c.sh.Totals; t != nil && n > 0 {
		t.BytesOut.Add(uint64(n))
	}
	if n > 0 && c.owner != nil {
		// The client took bytes: progress, even in the middle of a large
		// batch that takes a slow reader long to take whole.
		c.owner.Took(0)
	}
}

// New wraps a network connection. maxIn bounds incoming packets.
func New(nc net.Conn, maxIn uint32) *Conn {
	c := &Conn{
		nc:     nc,
		maxIn:  maxIn,
		reason: -1,
		sh:     &noShared,
	}
	c.writer = c.writeLoop
	return c
}

// waitDrainedLocked waits for the writer to take the queue or stop, or
// for a broadcast. The condition is made on first use: most connections
// never wait on it, and only the reader does. The caller holds mu.
func (c *Conn) waitDrainedLocked() {
	if c.drained == nil {
		c.drained = sync.NewCond(&c.mu)
	}
	c.drained.Wait()
}

// broadcastLocked wakes whoever waits in waitDrainedLocked. The caller
// holds mu (so that the condition is not being made meanwhile).
func (c *Conn) broadcastLocked() {
	if c.drained != nil {
		c.drained.Broadcast()
	}
}

// kickLocked starts the writer when there is something to write and none
// runs: an idle connection has no writer goroutine. The caller holds mu.
func (c *Conn) kickLocked() {
	if !c.writing && !c.closed {
		c.attachLocked() // a parked connection's socket was released
		c.writing = true
		go c.writer()
	}
}

// queueBufs is the storage of a connection's queue, and the spare slice
// its writer swaps with the queue, pooled so a connection that wakes often
// reuses them while an idle one holds none (nor the spare's slice header).
type queueBufs struct{ q, s []packet.Packet }

var queuePool = sync.Pool{New: func() any { return new(queueBufs) }}

// maxPooledQueue bounds the capacity of queue slices kept in queuePool: a
// burst's large queue is left to the collector.
const maxPooledQueue = 1024

// enqueue appends p to the queue, taking pooled storage for an idle
// connection's first packet. The caller holds mu.
func (c *Conn) enqueue(p packet.Packet) {
	if c.bufs == nil {
		c.bufs = queuePool.Get().(*queueBufs)
		c.queue, c.bufs.s = c.bufs.q[:0], c.bufs.s[:0]
	}
	c.queue = append(c.queue, p)
}

// releaseQueueLocked gives the queue's storage back to the pool once the
// writer has drained it. The caller holds mu.
func (c *Conn) releaseQueueLocked() {
	if b := c.bufs; b != nil {
		b.q = nil
		if cap(c.queue) <= maxPooledQueue {
			b.q = c.queue[:0]
		}
		if cap(b.s) > maxPooledQueue {
			b.s = nil
		}
		c.bufs = nil
		queuePool.Put(b)
	}
	c.queue = nil
}

// finish closes the socket and marks the connection done, once.
func (c *Conn) finish() {
	c.fin.Do(func() {
		c.mu.Lock()
		reason := c.reason
		// What is left is never written: dropped, as for a slow reader.
		if n := c.qos0; n > 0 {
			c.Dropped.Add(uint64(n))
			if t := c.sh.Totals; t != nil {
				t.Dropped.Add(uint64(n))
			}
		}
		c.addQoS0(-c.qos0Len, -int(c.qos0))
		c.mu.Unlock()
		if rc := reasonCloser(c.nc); rc != nil && reason >= 0 {
			rc.CloseForReason(byte(reason))
		} else if reason >= 0 {
			c.linger()
		}
		c.nc.Close()
		c.wakeParked()
		c.mu.Lock()
		closeChanLocked(&c.endLocked().done)
		c.mu.Unlock()
	})
}

// LingerTime bounds how long a connection that ends with a DISCONNECT or a
// refused CONNACK keeps reading, and discarding, what the client still
// sends after the broker has shut its side for writing.
const LingerTime = time.Second

// linger closes gently a connection that just sent the client the reason
// it ends: the write side is shut (FIN after the reason), and input is read
// and discarded until the client closes, LingerTime passes or Close is
// called. Closing with unread input would send a reset instead, and a
// client still sending (a burst of PUBLISHes past Receive Maximum) could
// lose the reason with it. No packet is handled any more: ReadPacket
// refuses, and discards one it was reading, once lingering.
func (c *Conn) linger() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	stop := time.AfterFunc(LingerTime, func() { c.nc.Close() })
	defer stop.Stop()
	// Under mu, so a reader cannot set a later deadline after this one. A
	// reader blocked in a read returns by then, with input (which it
	// discards: ReadPacket refuses once lingering) or the timeout; the
	// reads below wait for it, as the socket has one reader at a time.
	c.mu.Lock()
	c.lingering = true
	c.nc.SetReadDeadline(time.Now().Add(LingerTime))
	stopped := chanLocked(&c.endLocked().stop)
	c.mu.Unlock()
	var buf [512]byte
	for {
		select {
		case <-stopped:
			return
		default:
		}
		if _, err := c.nc.Read(buf[:]); err != nil {
			return
		}
	}
}

// reasonCloser finds a transport that can say why it closes (WebSocket),
// looking through wrappers that expose the connection they wrap.
func reasonCloser(nc net.Conn) interface{ CloseForReason(byte) error } {
	for i := 0; nc != nil && i < 8; i++ {
		if rc, ok := nc.(interface{ CloseForReason(byte) error }); ok {
			return rc
		}
		u, ok := nc.(interface{ Unwrap() net.Conn })
		if !ok {
			return nil
		}
		nc = u.Unwrap()
	}
	return nil
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// SetVersion sets the protocol level used to decode and encode.
func (c *Conn) SetVersion(v byte) { c.version.Store(uint32(v)) }

// Version returns the protocol level.
func (c *Conn) Version() byte { return byte(c.version.Load()) }

// ErrTooLarge is returned by ReadPacket for a packet above the limit.
var ErrTooLarge = &packet.Error{Code: packet.PacketTooLarge, Reason: "packet exceeds maximum packet size"}

// Send queues packets for the writer. QoS 0 publishes past the bounds are
// dropped and counted (see MaxPendingQoS0); it returns false if the
// connection is closing.
func (c *Conn) Send(ps ...packet.Packet) bool {
	c.mu.Lock()
	if c.closing || c.closed {
		c.mu.Unlock()
		return false
	}
	for _, p := range ps {
		if isQoS0(p) {
			switch c.admitQoS0(p) {
			case dropped:
				c.drop(p)
				continue
			case replaced:
				continue
			}
		}
		c.enqueue(p)
	}
	c.kickLocked()
	c.mu.Unlock()
	return true
}

type admission int

const (
	admitted admission = iota // to be queued
	dropped                   // to be dropped and counted
	replaced                  // took the place of its topic's queued one
)

// admitQoS0 makes room for a QoS 0 publish, or puts it in the place of the
// queued one of its topic when it asks for the latest value. The caller
// holds mu.
func (c *Conn) admitQoS0(p packet.Packet) admission {
	n := messageSize(p)
	topic, latest := latestTopic(p)
	if latest {
		if i, ok := c.latest[topic]; ok {
			old := c.queue[i]
			c.addQoS0(n-messageSize(old), 0)
			c.queue[i] = p
			release(old)
			c.Conflated.Add(1)
			if t := c.sh.Totals; t != nil {
				t.Conflated.Add(1)
			}
			return replaced
		}
	}
	maxBytes := c.sh.MaxQueuedBytes
	over := func(k int) bool {
		return int(c.qos0) >= MaxPendingQoS0*k || maxBytes > 0 && c.qos0Len > 0 && c.qos0Len+n > maxBytes*k
	}
	switch {
	case !over(1):
	case c.shed == ShedNewest || over(HardLimit) && (!fromHeld(p) || over(HeldLimit)):
		return dropped
	case c.shed == ShedOldest:
		for over(1) && c.dropOldestQoS0() {
		}
	}
	if latest {
		if c.latest == nil {
			c.latest = make(map[string]int)
		}
		c.latest[topic] = len(c.queue)
	}
	c.addQoS0(n, 1)
	return admitted
}

// addQoS0 counts bytes and publishes into (or out of) the QoS 0 queue.
func (c *Conn) addQoS0(bytes, count int) {
	c.qos0 += int32(count)
	c.qos0Len += bytes
	c.full.Store(c.qos0 >= MaxPendingQoS0 || c.sh.MaxQueuedBytes > 0 && c.qos0Len >= c.sh.MaxQueuedBytes)
	if t := c.sh.Totals; t != nil {
		t.Queued.Add(int64(bytes))
	}
}

// dropOldestQoS0 drops the oldest queued QoS 0 publish; false if none.
// The caller holds mu.
func (c *Conn) dropOldestQoS0() bool {
	for i, p := range c.queue {
		if !isQoS0(p) {
			continue
		}
		c.addQoS0(-messageSize(p), -1)
		copy(c.queue[i:], c.queue[i+1:])
		c.queue[len(c.queue)-1] = nil
		c.queue = c.queue[:len(c.queue)-1]
		c.drop(p)
		if len(c.latest) > 0 {
			// Indexes past i moved down by one.
			for t, j := range c.latest {
				switch {
				case j == i:
					delete(c.latest, t)
				case j > i:
					c.latest[t] = j - 1
				}
			}
		}
		return true
	}
	return false
}

// drop releases a QoS 0 publish that will not be written, counted.
func (c *Conn) drop(p packet.Packet) {
	c.Dropped.Add(1)
	if t := c.sh.Totals; t != nil {
		t.Dropped.Add(1)
	}
	release(p)
}

// Full reports whether the QoS 0 publishes waiting for the client are at
// their bound: the broker then holds back the publishers that feed it.
func (c *Conn) Full() bool { return c.full.Load() }

// SetShed sets what happens to QoS 0 publishes past the bound: ShedNone
// (kept, up to HardLimit times it), ShedNewest or ShedOldest.
func (c *Conn) SetShed(policy int) {
	c.mu.Lock()
	c.shed = uint8(policy)
	c.mu.Unlock()
}

// fromHeld reports a delivery whose publisher the broker holds back while
// this client is behind: what it adds past the bound is bounded by the
// publishers' held acknowledgements, so the hard limit does not apply.
func fromHeld(p packet.Packet) bool {
	if g, ok := p.(*gated); ok {
		p = g.Packet
	}
	h, ok := p.(interface{ FromHeld() bool })
	return ok && h.FromHeld()
}

// latestTopic reports the topic of a QoS 0 publish that asks for the
// latest value of its topic only.
func latestTopic(p packet.Packet) (string, bool) {
	if g, ok := p.(*gated); ok {
		p = g.Packet
	}
	if l, ok := p.(interface{ LatestTopic() (string, bool) }); ok {
		return l.LatestTopic()
	}
	return "", false
}

// Gate holds packets back until an operation they depend on (a store
// commit) has finished: Done is closed then, and OK tells whether it
// succeeded. Packets behind a failed gate are dropped, never written.
type Gate interface {
	Done() <-chan struct{}
	OK() bool
}

// gated is a packet the writer must not write before its gate opens.
type gated struct {
	packet.Packet
	gate Gate
}

// SendGated queues packets that the writer holds back, with everything
// queued after them, until gate is done; order is kept and no lock is held
// while waiting. If the gate fails, these packets are dropped.
func (c *Conn) SendGated(gate Gate, ps ...packet.Packet) bool {
	gs := make([]packet.Packet, len(ps))
	for i, p := range ps {
		gs[i] = &gated{Packet: p, gate: gate}
	}
	return c.Send(gs...)
}

// Appender is a packet that encodes itself, such as a delivery sharing its
// message's encoded bytes.
type Appender interface {
	AppendPacket(dst []byte, version byte) ([]byte, error)
}

// HeadAppender is an Appender that can leave a large payload out of dst:
// with a payload of at least min bytes it appends the packet up to it and
// returns it, to be written after those bytes and kept intact until the
// packet is released; otherwise it appends the whole packet and returns a
// nil payload.
type HeadAppender interface {
	AppendHead(dst []byte, version byte, min int) ([]byte, []byte, error)
}

// vecPayload is the payload size from which a PUBLISH on a TCP socket is
// written from its message's memory (writev) rather than copied into the
// write buffer: above it the copy costs more than one more iovec.
const vecPayload = 4 << 10

// Releaser is a packet whose memory goes back to a pool once written.
type Releaser interface{ Release() }

func release(p packet.Packet) {
	if g, ok := p.(*gated); ok {
		p = g.Packet
	}
	if r, ok := p.(Releaser); ok {
		r.Release()
	}
}

func isQoS0(p packet.Packet) bool {
	if g, ok := p.(*gated); ok {
		// Deliveries of a stored QoS 1/2 publish wait behind its commit;
		// at QoS 0 they are as droppable as any.
		p = g.Packet
	}
	switch p := p.(type) {
	case *packet.Publish:
		return p.QoS == 0
	case interface{ QoSLevel() byte }:
		return p.QoSLevel() == 0
	}
	return false
}

// messageSize is the topic and payload bytes of a PUBLISH.
func messageSize(p packet.Packet) int {
	if g, ok := p.(*gated); ok {
		p = g.Packet
	}
	switch p := p.(type) {
	case *packet.Publish:
		return len(p.Topic) + len(p.Payload)
	case interface{ MessageSize() int }:
		return p.MessageSize()
	}
	return 0
}

// CloseAfter queues a last packet (may be nil), flushes the queue and closes
// the connection. It returns at once; Wait waits for the close.
func (c *Conn) CloseAfter(last packet.Packet) {
	c.mu.Lock()
	if c.closing || c.closed {
		c.mu.Unlock()
		return
	}
	if last != nil {
		c.enqueue(last)
		switch l := last.(type) {
		case *packet.Disconnect:
			c.reason = int16(l.ReasonCode)
		case *packet.Connack:
			// A refused CONNECT: a WebSocket closes with the code that
			// matches the refusal (3.x return codes are below 0x80).
			if l.ReasonCode >= 0x80 {
				c.reason = int16(l.ReasonCode)
			}
		}
	}
	c.closing = true
	c.kickLocked()
	c.mu.Unlock()
}

// Close closes the connection now, dropping anything queued.
func (c *Conn) Close() {
	c.mu.Lock()
	if !c.closed {
		closeChanLocked(&c.endLocked().stop)
	}
	c.attachLocked() // c.nc is the socket again, to be closed below
	c.closed = true
	c.broadcastLocked()
	writing := c.writing
	c.mu.Unlock()
	c.nc.Close() // unblocks a writer stuck in Write
	c.wakeParked()
	if !writing {
		c.finish()
	}
}

// WriteErr returns the write error that closed the connection (a client
// that stopped reading: a timeout), nil if none did. The reader then sees
// only the closed socket; this is the reason to report.
func (c *Conn) WriteErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.end == nil {
		return nil
	}
	return c.end.writeErr
}

// stopped is closed by Close: a gated wait gives up.
func (c *Conn) stopped() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return chanLocked(&c.endLocked().stop)
}

// Done is closed when the socket is closed and no writer runs.
func (c *Conn) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return chanLocked(&c.endLocked().done)
}

// closedChan stands for a stop or done channel closed before anyone asked
// for it.
var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// chanLocked returns *ch, made on first use: most connections never wait
// on stop or done, and an idle one holds neither. The caller holds mu.
func chanLocked(ch *chan struct{}) chan struct{} {
	if *ch == nil {
		*ch = make(chan struct{})
	}
	return *ch
}

// closeChanLocked closes *ch, or sets it closed if it was never made. The
// caller holds mu.
func closeChanLocked(ch *chan struct{}) {
	if *ch == nil {
		*ch = closedChan
	} else {
		close(*ch)
	}
}

// yieldBelow is the queue length under which a writer that was just
// started yields once before taking its first batch: the readers already
// runnable (other publishers of a fan-in, woken by the same poll) add
// theirs first, and one write carries them all instead of one each.
const yieldBelow = 64

func (c *Conn) writeLoop() {
	yielded := false
	for {
		c.mu.Lock()
		if c.closed {
			c.writing = false
			c.mu.Unlock()
			c.finish()
			return
		}
		if len(c.queue) == 0 && c.pongs == 0 {
			// Drained: the goroutine and its slices go away until the next
			// Send. After CloseAfter, this is the moment to close.
			c.writing = false
			c.releaseQueueLocked()
			c.releaseParkedLocked() // a reader parked meanwhile holds no socket object
			closing := c.closing
			if closing {
				c.closed = true
				c.broadcastLocked()
			}
			c.mu.Unlock()
			if closing {
				c.finish()
			}
			return
		}
		if !yielded && len(c.queue) < yieldBelow && !c.closing {
			yielded = true
			c.mu.Unlock()
			runtime.Gosched()
			continue
		}
		pongs := c.pongs // taken here, under the lock already held
		c.pongs = 0
		var batch []packet.Packet
		if c.bufs != nil { // nil when only PINGRESPs are due
			batch = c.queue
			c.queue = c.bufs.s[:0]
		}
		took := int(c.qos0)
		c.addQoS0(-c.qos0Len, -took)
		clear(c.latest)
		c.broadcastLocked()
		c.mu.Unlock()
		if took > 0 && c.owner != nil {
			c.owner.Took(took)
		}
		err := c.flush(batch, pongs)
		clear(batch)
		c.mu.Lock()
		if c.bufs != nil {
			c.bufs.s = batch[:0]
		}
		if err != nil {
			c.closed = true
			c.writing = false
			c.endLocked().writeErr = err
			c.broadcastLocked()
			c.mu.Unlock()
			c.finish()
			return
		}
		c.mu.Unlock()
	}
}

// flushChunk is the encoded size past which flush writes what it has: a
// batch of large messages for a slow client is not encoded all at once.
const flushChunk = 64 << 10

// flush encodes a batch into one pooled buffer and writes it once, or in
// pieces of about flushChunk when it is larger. On a TCP socket, payloads
// of vecPayload bytes or more are not copied: one vectored write sends the
// buffer's bytes and those payloads in order.
// The pongs PINGRESPs due go first: they are ordered with no packet.
func (c *Conn) flush(batch []packet.Packet, pongs uint8) error {
	w := bufPool.Get().(*wbuf)
	buf := w.b[:0]
	v := c.Version()
	// Vectored only on a plain TCP socket: through TLS or a WebSocket each
	// piece would become a record or frame of its own.
	_, vec := c.nc.(*net.TCPConn)
	pending := 0 // payload bytes in w.iov
	var err error
	buf = appendPongs(buf, pongs)
	for _, p := range batch {
		if g, ok := p.(*gated); ok {
			select {
			case <-g.gate.Done():
			default:
				// Write what may go now, then wait for the gate.
				if len(buf) > 0 || len(w.iov) > 0 {
					werr := c.writeOut(w, buf)
					buf, pending = buf[:0], 0
					if werr != nil {
						return werr
					}
				}
				if err := c.awaitGate(g.gate, w); err != nil {
					return err
				}
			}
			p = g.Packet
			if !g.gate.OK() {
				release(p) // the operation failed: it never happened
				continue
			}
		}
		var payload []byte
		if h, ok := p.(HeadAppender); ok && vec {
			buf, payload, err = h.AppendHead(buf, v, vecPayload)
		} else if a, ok := p.(Appender); ok {
			buf, err = a.AppendPacket(buf, v)
		} else {
			buf, err = packet.Append(buf, p, v)
		}
		if err == nil && payload != nil {
			// Written from where it lies: p keeps it until then.
			w.iov = append(w.iov, buf[w.mark:], payload)
			w.mark = len(buf)
			w.held = append(w.held, p)
			pending += len(payload)
		} else {
			release(p)
		}
		if err != nil {
			// An unencodable packet is a broker bug, not the client's; skip it
			// rather than corrupt the stream.
			continue
		}
		if len(buf)+pending >= flushChunk {
			werr := c.writeOut(w, buf)
			buf, pending = buf[:0], 0
			if werr != nil {
				return werr
			}
		}
	}
	var werr error
	if len(buf) > 0 || len(w.iov) > 0 {
		werr = c.writeOut(w, buf)
	}
	if cap(buf) <= maxPooledWriteBuf {
		w.b = buf[:0]
		bufPool.Put(w)
	}
	return werr
}

// writeOut writes buf, or the vectored pieces in w then buf's rest, and
// releases the packets whose payloads were among them.
func (c *Conn) writeOut(w *wbuf, buf []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	var n int
	var err error
	if len(w.iov) == 0 {
		n, err = c.nc.Write(buf)
	} else {
		if len(buf) > w.mark {
			w.iov = append(w.iov, buf[w.mark:])
		}
		iov := w.iov // WriteTo consumes w.iov; its array is kept for the next
		var n64 int64
		n64, err = w.iov.WriteTo(c.nc)
		n = int(n64)
		clear(iov)
		w.iov = iov[:0]
		for _, p := range w.held {
			release(p)
		}
		clear(w.held)
		w.held = w.held[:0]
	}
	w.mark = 0
	c.countOut(n)
	return err
}

// maxPooledWriteBuf bounds the write buffers flush gives back to bufPool.
// A batch is written once it passes flushChunk, so a buffer grows to
// flushChunk plus one packet: with packets of up to 64 KiB (1 KiB or 64 KiB
// payloads in bulk) that is up to about 192 KiB, and a buffer dropped at
// that size was grown again, copy by copy, on the next busy flush. Larger
// ones (a single huge packet) are dropped. The pool is shared by all
// connections: an idle one holds none.
const maxPooledWriteBuf = 256 << 10
