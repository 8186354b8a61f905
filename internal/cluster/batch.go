package cluster

// Coalescing what a node forwards. Each message published on NATS costs
// the sending node's connection, its embedded server, the route, the
// receiving server and the receiving connection a parse, a subject match
// and an allocation, whatever its size: with many small messages that, not
// the bytes, bounds cross-node throughput. So Forward does not publish: it
// encodes the message into the node's outbox, and one goroutine publishes
// what has gathered each time it wakes, the messages for one subject
// together in one NATS message (a batch), in the order they were forwarded.
//
// Order. NATS keeps the order of what one connection publishes, and a
// receiving node reads its normal subscriptions in one queue; the outbox
// keeps each publisher's messages in the order it forwarded them, across
// subjects: a message joins its subject's open batch only if that batch
// comes after the one its publisher's previous message went in, and a
// subject's open batch is closed by a message of that subject sent alone.
//
// Confirmed messages (for persistent sessions on other nodes, relay.go)
// go alone, in the old format, with their headers; so does a batch of
// one. Nothing waits for a batch to fill: what a wake-up finds is sent.
//
// Mixed versions. A node of a release before batches drops them (an
// unknown version), so batches go out only while every node that may
// receive them has said it reads them (featuresLine, in its heartbeat);
// otherwise each message of a batch goes alone, in the order batched.

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/starling-mqtt/starling/internal/session"
)

const (
	// wireVersionBatch starts a batch: then, per message, its length
	// (uvarint) and its encoding (wireVersion or wireVersionNamed). A
	// node of an earlier release refuses it as an unknown version.
	wireVersionBatch = 3
	// maxBatchBytes bounds one batch (a message that is larger goes
	// alone), far below the backplane's maximum payload, so that a batch
	// never needs it; maxBatchMsgs bounds its messages.
	maxBatchBytes = 32 << 10
	maxBatchMsgs  = 128
	// maxOutBytes bounds what waits in the outbox: a forward that finds
	// it full waits for the sending goroutine (and its publisher's reader
	// with it), as a full socket would make it.
	maxOutBytes = 4 << 20
	// featuresLine, in a heartbeat after the nodes it hears (lease.go),
	// says that its sender reads batches. A release before batches takes
	// it for the name of a node it hears, which no node can have (the
	// embedded NATS server refuses a name with a space): it changes
	// nothing there.
	featuresLine = "features: batch"
	// maxCachedSubjects bounds the subjects remembered per node (of topics
	// up to maxCachedTopic bytes): past it the cache starts again.
	maxCachedSubjects = 4096
	maxCachedTopic    = 256
)

// subjectCache maps recent topics to their subjects: working one out per
// message (splitting and escaping the levels, two allocations) was 7% of
// a forwarding node's CPU in fan-in.
type subjectCache struct {
	m sync.Map // topic -> subject
	n atomic.Int32
}

// subject is topicSubject(topic), remembered.
func (n *Node) subject(topic string) string {
	c := &n.subjects
	if s, ok := c.m.Load(topic); ok {
		return s.(string)
	}
	s := topicSubject(topic)
	if len(topic) <= maxCachedTopic {
		if c.n.Add(1) > maxCachedSubjects {
			c.m.Clear()
			c.n.Store(0)
		}
		c.m.Store(topic, s)
	}
	return s
}

// outbox is what the node has forwarded and not yet published.
type outbox struct {
	flushMu sync.Mutex // one flush at a time, so that batches go out in order
	mu      sync.Mutex
	room    sync.Cond // signalled when the sender takes what waits
	// batches wait in the order they were opened.
	batches []*outBatch
	open    map[string]int // subject -> its open batch, in batches
	last    map[string]int // publisher -> the batch its latest message went in
	bytes   int
	closed  bool // Close took the last: send publishes at once
	free    []*outBatch
	scratch []byte
	signal  chan struct{}
	batched atomic.Uint64 // NATS messages published with more than one message
}

// outBatch is one NATS message to publish: one or more encoded messages
// for subj, or a confirmed message with its headers (msg).
type outBatch struct {
	subj  string
	buf   []byte // entries: uvarint length, then the encoded message
	n     int
	topic string // the first message's, for the log
	msg   *nats.Msg
	f     *forwarded
}

func (o *outbox) init() {
	o.room.L = &o.mu
	o.open = make(map[string]int)
	o.last = make(map[string]int)
	o.signal = make(chan struct{}, 1)
}

// enqueue queues m, named seq, for subj; msg (with confirmation headers)
// or nil. With msg, the message is registered as waiting for
// confirmations (expect) and returned.
func (n *Node) enqueue(m *session.Message, seq uint64, subj string, targets map[string][]string, msg *nats.Msg) *forwarded {
	o := &n.out
	o.mu.Lock()
	for o.bytes >= maxOutBytes && !o.closed {
		o.room.Wait()
	}
	if o.closed {
		o.mu.Unlock()
		return n.sendNow(m, seq, subj, targets, msg)
	}
	wasEmpty := len(o.batches) == 0
	var err error
	o.scratch, err = encodeMessage(o.scratch[:0], header{n.instance, seq}, m)
	if err != nil {
		o.mu.Unlock()
		n.log.Warn("cluster: forward failed", "topic", m.Topic, "err", err)
		return nil
	}
	var f *forwarded
	if msg != nil {
		f = n.expect(seq, o.scratch, targets)
		msg.Data = f.data
		b := o.add(subj, m.Topic)
		b.msg, b.f = msg, f
		o.last[m.Publisher] = len(o.batches) - 1
		delete(o.open, subj) // what follows on subj comes after it
		o.bytes += len(f.data)
	} else {
		i, ok := o.open[subj]
		if ok {
			b := o.batches[i]
			j, seen := o.last[m.Publisher]
			if (seen && j > i) || b.n >= maxBatchMsgs || len(b.buf)+len(o.scratch)+binary.MaxVarintLen32 > maxBatchBytes {
				ok = false
			}
		}
		if !ok {
			o.add(subj, m.Topic)
			i = len(o.batches) - 1
			o.open[subj] = i
		}
		b := o.batches[i]
		b.buf = binary.AppendUvarint(b.buf, uint64(len(o.scratch)))
		b.buf = append(b.buf, o.scratch...)
		b.n++
		o.last[m.Publisher] = i
		o.bytes += len(o.scratch)
	}
	if cap(o.scratch) > 64<<10 {
		o.scratch = nil
	}
	o.mu.Unlock()
	if wasEmpty {
		wake(o.signal)
	}
	return f
}

// add opens a batch for subj at the end; called under mu.
func (o *outbox) add(subj, topic string) *outBatch {
	var b *outBatch
	if k := len(o.free); k > 0 {
		b, o.free = o.free[k-1], o.free[:k-1]
	} else {
		b = new(outBatch)
	}
	b.subj, b.topic = subj, topic
	o.batches = append(o.batches, b)
	return b
}

// sendNow publishes at once: the outbox is closed.
func (n *Node) sendNow(m *session.Message, seq uint64, subj string, targets map[string][]string, msg *nats.Msg) *forwarded {
	buf, err := encodeMessage(nil, header{n.instance, seq}, m)
	var f *forwarded
	if err == nil {
		if msg == nil {
			err = n.pc.Publish(subj, buf)
		} else {
			f = n.expect(seq, buf, targets)
			msg.Data = buf
			err = n.pc.PublishMsg(msg)
		}
	}
	if err != nil {
		n.forwardFailed(m.Topic, f, err)
	}
	return f
}

// forwardFailed logs a message that could not be published; one that
// waits for confirmations is relayed at the next look.
func (n *Node) forwardFailed(topic string, f *forwarded, err error) {
	n.log.Warn("cluster: forward failed", "topic", topic, "err", err)
	if f != nil {
		n.rel.mu.Lock()
		f.at = time.Time{}
		n.rel.mu.Unlock()
	}
}

// outLoop publishes what the outbox gathers, once per wake-up.
func (n *Node) outLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.out.signal:
		}
		n.flushOut(false)
	}
}

// flushOut publishes everything the outbox holds; last: and closes it,
// so that what is forwarded after is published at once (Close).
func (n *Node) flushOut(last bool) {
	o := &n.out
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	o.mu.Lock()
	bs := o.batches
	o.batches = nil
	clear(o.open)
	clear(o.last)
	o.bytes = 0
	o.closed = o.closed || last
	o.room.Broadcast()
	o.mu.Unlock()
	var scratch []byte // the batches' payloads, one after the other
	batch := n.batching()
	for _, b := range bs {
		var err error
		switch {
		case b.msg != nil:
			err = n.pc.PublishMsg(b.msg)
		case b.n > 1 && !batch:
			err = n.publishAlone(b)
		default:
			data := b.payload(scratch)
			if b.n > 1 {
				scratch = data
				n.out.batched.Add(1)
			}
			err = n.pc.Publish(b.subj, data)
		}
		if err != nil {
			n.forwardFailed(b.topic, b.f, err)
		}
	}
	o.mu.Lock()
	for _, b := range bs {
		if cap(b.buf) > 2*maxBatchBytes {
			b.buf = nil
		}
		*b = outBatch{buf: b.buf[:0]}
		o.free = append(o.free, b)
	}
	if len(o.batches) == 0 && cap(bs) >= cap(o.batches) {
		o.batches = bs[:0] // reused when nothing came meanwhile
	}
	o.mu.Unlock()
}

// publishAlone publishes b's messages one by one, in order, in the format
// every release reads: some node may not read batches.
func (n *Node) publishAlone(b *outBatch) error {
	for buf := b.buf; len(buf) > 0; {
		l, k := binary.Uvarint(buf)
		if err := n.pc.Publish(b.subj, buf[k:k+int(l)]); err != nil {
			return err
		}
		buf = buf[k+int(l):]
	}
	return nil
}

// batchVerdictLocked works out, as a heartbeat arrives, until when the
// outbox may send batches: while every node that may receive them reads
// them. Those are the peers heard within liveWithin, and they must number
// at least the configured peers: one not heard lately (down, starting, cut
// off, or not heard yet) may come back as a release that does not read
// batches, and subscribe before its first heartbeat arrives here. So only
// a restart of a peer faster than liveWithin can meet a batch it does not
// read. Called under lease.mu.
func (n *Node) batchVerdictLocked(now int64) {
	until, fresh := int64(math.MaxInt64), 0
	for p, at := range n.lease.heard {
		if now-at >= int64(liveWithin) {
			continue
		}
		if !n.lease.batches[p] {
			until = 0
			break
		}
		fresh++
		until = min(until, at+int64(liveWithin))
	}
	if fresh == 0 || fresh < len(n.cfg.Peers) || n.lease.oldWire {
		until = 0
	}
	n.lease.batchUntil.Store(until)
}

// batching reports whether the outbox may send batches now.
func (n *Node) batching() bool {
	return n.lease.mono() < n.lease.batchUntil.Load()
}

// isBatch reports whether a NATS message's payload is a batch.
func isBatch(data []byte) bool { return len(data) > 0 && data[0] == wireVersionBatch }

// payload is what b publishes (not for a confirmed message), built in
// scratch when it is a batch: a message alone goes in the format every
// release reads.
func (b *outBatch) payload(scratch []byte) []byte {
	if b.n == 1 {
		_, k := binary.Uvarint(b.buf)
		return b.buf[k:]
	}
	return append(append(scratch[:0], wireVersionBatch), b.buf...)
}

// forEachEncoded calls fn with each encoded message in data, a NATS
// message's payload: a batch or one message.
func forEachEncoded(data []byte, fn func([]byte)) error {
	if len(data) == 0 || data[0] != wireVersionBatch {
		fn(data)
		return nil
	}
	b := data[1:]
	for len(b) > 0 {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return fmt.Errorf("%w: batch entry", errWire)
		}
		fn(b[k : k+int(l)])
		b = b[k+int(l):]
	}
	return nil
}

// lastName is the header of the last message in data (a batch or one
// message): the receiver drops a copy of what it has just taken by it.
func lastName(data []byte) (header, bool) {
	var last []byte
	if forEachEncoded(data, func(e []byte) { last = e }) != nil || len(last) < 17 {
		return header{}, false
	}
	return header{binary.BigEndian.Uint64(last[1:]), binary.BigEndian.Uint64(last[9:])}, true
}
