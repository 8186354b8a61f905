// Package clusterfault runs a three-node Starling cluster as separate
// processes, injects faults (kills, pauses, partitions, restarts, a wiped
// data folder) while independent MQTT clients publish and subscribe, and
// checks from the clients' history that nothing acknowledged was lost.
//
// This file holds the history and its checker; the test drives the rest.
package clusterfault

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// Kind is what an Event records.
type Kind uint8

const (
	// Send: a publisher handed message Seq to its client library.
	Send Kind = iota + 1
	// Ack: the broker acknowledged Seq (PUBACK; PUBCOMP for QoS 2).
	Ack
	// Fail: the publish of Seq ended without an acknowledgement; its
	// outcome is unknown (it may still arrive).
	Fail
	// Deliver: a subscriber's application received Seq of Pub.
	Deliver
	// Subscribed: a subscriber's subscriptions were granted; a persistent
	// subscriber is owed every message acknowledged after its first one.
	Subscribed
	// Connected: a client's CONNECT was accepted by Node; Present is the
	// CONNACK's session present flag.
	Connected
	// Disconnected: a client's connection ended.
	Disconnected
)

// Event is one entry of a History. It is kept small (24 bytes): a long run
// records millions.
type Event struct {
	At     time.Duration // since the history started
	Seq    uint32
	Kind   Kind
	Client uint8 // who recorded it (History.ID)
	Pub    uint8 // the message's publisher (Send, Ack, Fail, Deliver)
	QoS    uint8 // the publish's QoS; for Deliver, the QoS it arrived with
	Node   uint8 // Connected: the node's index
	Dup    bool  // Deliver: the DUP flag was set
	// PacketID is, for Deliver, the packet ID it arrived under (to tell a
	// resend under the same ID from a new message in history.txt).
	PacketID uint16
	Present  bool // Connected: session present
}

// History records what clients sent, had acknowledged and received, in the
// order it happened. Safe for concurrent use.
type History struct {
	start time.Time
	mu    sync.Mutex
	names []string
	ids   map[string]uint8
	ev    []Event
	// delivered[sub][pub] marks the sequence numbers sub received, so that
	// a test can wait for one without scanning the events.
	delivered map[uint8]map[uint8][]bool
	acked     map[uint8][]bool
}

// NewHistory starts an empty history; its clock starts now.
func NewHistory() *History {
	return &History{start: time.Now(), ids: map[string]uint8{},
		delivered: map[uint8]map[uint8][]bool{}, acked: map[uint8][]bool{}}
}

// ID returns the small number that stands for a client's name.
func (h *History) ID(name string) uint8 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.idLocked(name)
}

func (h *History) idLocked(name string) uint8 {
	if id, ok := h.ids[name]; ok {
		return id
	}
	if len(h.names) == 255 {
		panic("clusterfault: more than 255 clients")
	}
	id := uint8(len(h.names))
	h.names = append(h.names, name)
	h.ids[name] = id
	return id
}

// Name returns the name an ID stands for.
func (h *History) Name(id uint8) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if int(id) < len(h.names) {
		return h.names[id]
	}
	return fmt.Sprintf("#%d", id)
}

// Since converts a wall-clock time to the history's clock.
func (h *History) Since(t time.Time) time.Duration { return t.Sub(h.start) }

// Now is the history's clock now.
func (h *History) Now() time.Duration { return time.Since(h.start) }

// Add records e, stamping it with the current time if e.At is zero.
func (h *History) Add(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.At == 0 {
		e.At = time.Since(h.start)
	}
	h.ev = append(h.ev, e)
	switch e.Kind {
	case Deliver:
		m := h.delivered[e.Client]
		if m == nil {
			m = map[uint8][]bool{}
			h.delivered[e.Client] = m
		}
		m[e.Pub] = mark(m[e.Pub], e.Seq)
	case Ack:
		h.acked[e.Pub] = mark(h.acked[e.Pub], e.Seq)
	}
}

func mark(b []bool, seq uint32) []bool {
	for uint32(len(b)) <= seq {
		b = append(b, false)
	}
	b[seq] = true
	return b
}

// Delivered reports whether sub received seq of pub.
func (h *History) Delivered(sub, pub uint8, seq uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.delivered[sub][pub]
	return seq < uint32(len(b)) && b[seq]
}

// Acked reports whether seq of pub was acknowledged.
func (h *History) Acked(pub uint8, seq uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.acked[pub]
	return seq < uint32(len(b)) && b[seq]
}

// Events returns a copy of the events recorded so far.
func (h *History) Events() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.ev...)
}

// Expect says that subscriber Sub receives what publishers Pubs send.
// A persistent subscriber is owed every message acknowledged after its
// first subscription was granted; a clean one only what was sent and
// acknowledged while it was connected, and its losses are reported apart
// (messages to clean sessions cross nodes at most once).
type Expect struct {
	Sub        uint8
	Pubs       []uint8
	Persistent bool
}

// Window selects the messages a check covers: those first sent at or after
// From and before To. Deliveries count whenever they happened.
type Window struct{ From, To time.Duration }

// Stats sums, for the messages of one QoS in a window, what the
// subscribers received against what they were owed.
type Stats struct {
	QoS     uint8
	Sent    int // messages sent
	Acked   int // of those, acknowledged
	Unacked int // sent but never acknowledged (outcome unknown)
	// Owed counts (persistent subscriber, acknowledged message) pairs.
	Owed int
	// Lost: owed pairs never delivered.
	Lost int
	// Duplicates: deliveries to persistent subscribers beyond the first of
	// a message. DupNoFlag counts those of them that arrived without DUP,
	// but for DupResent: those of QoS 1 messages whose publisher's
	// connection ended before their PUBACK. The publisher sent those
	// again, and a resent QoS 1 PUBLISH is a new message to the broker,
	// which does not pass its DUP on [MQTT-3.3.1-3].
	Duplicates int
	DupNoFlag  int
	DupResent  int
	// Reordered: first deliveries of a message with a lower sequence
	// number than one its subscriber had already received from the same
	// publisher. ReorderRuns counts the times a subscriber's sequence went
	// back (a backlog delivered after newer messages is one run).
	Reordered, ReorderRuns int
	// MaxAckGap is the longest time a publisher of this QoS went without
	// an acknowledgement while it kept sending, within the window.
	MaxAckGap time.Duration
	// Clean subscribers: acknowledged messages sent while they were
	// connected and never delivered, and extra deliveries.
	CleanOwed, CleanMissed, CleanDuplicates int
	// Examples of lost and duplicated messages, "sub: pub/seq (sent at)";
	// NoFlagExamples: of the DupNoFlag ones.
	LostExamples, DupExamples, NoFlagExamples []string
}

// Report is the result of Check, one Stats per QoS that was published.
type Report struct {
	ByQoS map[uint8]*Stats
}

// QoS returns the stats of QoS q (zero if nothing was published at q).
func (r Report) QoS(q uint8) Stats {
	if s := r.ByQoS[q]; s != nil {
		return *s
	}
	return Stats{QoS: q}
}

type msgKey struct {
	pub uint8
	seq uint32
}

type msgInfo struct {
	qos       uint8
	sent, ack time.Duration
	acked     bool
	resent    bool // its publisher's connection ended while it was unacknowledged
}

type interval struct{ from, to time.Duration }

// Check reads events (in the order they were recorded) and reports, per
// QoS, the messages first sent in w that were acknowledged but not
// delivered to a subscriber owed them, delivered more than once, or out
// of order. names turns client IDs into names for the examples; nil
// prints numbers.
func Check(events []Event, expects []Expect, w Window, names func(uint8) string) Report {
	if names == nil {
		names = func(id uint8) string { return fmt.Sprintf("#%d", id) }
	}
	msgs := map[msgKey]*msgInfo{}
	firstSub := map[uint8]time.Duration{} // persistent subscribers: first grant
	connected := map[uint8][]interval{}   // clean subscribers: subscribed .. disconnected
	open := map[uint8]time.Duration{}
	isOpen := map[uint8]bool{}
	unacked := map[uint8]*msgInfo{} // per publisher: the message it waits for
	end := time.Duration(0)
	for _, e := range events {
		end = max(end, e.At)
		switch e.Kind {
		case Send:
			k := msgKey{e.Pub, e.Seq}
			if msgs[k] == nil {
				msgs[k] = &msgInfo{qos: e.QoS, sent: e.At}
			}
			unacked[e.Pub] = msgs[k]
		case Ack:
			if m := msgs[msgKey{e.Pub, e.Seq}]; m != nil && !m.acked {
				m.acked, m.ack = true, e.At
			}
			delete(unacked, e.Pub)
		case Subscribed:
			if _, ok := firstSub[e.Client]; !ok {
				firstSub[e.Client] = e.At
			}
			if !isOpen[e.Client] {
				open[e.Client], isOpen[e.Client] = e.At, true
			}
		case Disconnected:
			if m := unacked[e.Client]; m != nil {
				m.resent = true
			}
			if isOpen[e.Client] {
				connected[e.Client] = append(connected[e.Client], interval{open[e.Client], e.At})
				isOpen[e.Client] = false
			}
		}
	}
	for c, ok := range isOpen {
		if ok {
			connected[c] = append(connected[c], interval{open[c], end + 1})
		}
	}
	in := func(m *msgInfo) bool { return m.sent >= w.From && m.sent < w.To }

	r := Report{ByQoS: map[uint8]*Stats{}}
	stats := func(q uint8) *Stats {
		s := r.ByQoS[q]
		if s == nil {
			s = &Stats{QoS: q}
			r.ByQoS[q] = s
		}
		return s
	}
	for _, m := range msgs {
		if !in(m) {
			continue
		}
		s := stats(m.qos)
		s.Sent++
		if m.acked {
			s.Acked++
		} else {
			s.Unacked++
		}
	}

	// Deliveries per subscriber and message, in order.
	type subPub struct{ sub, pub uint8 }
	count := map[subPub]map[uint32]int{}
	highest := map[subPub]uint32{}
	seen := map[subPub]bool{}
	prev := map[subPub]uint32{} // the last first delivery
	persistent := map[uint8]bool{}
	expected := map[subPub]bool{}
	for _, x := range expects {
		persistent[x.Sub] = x.Persistent
		for _, p := range x.Pubs {
			expected[subPub{x.Sub, p}] = true
		}
	}
	for _, e := range events {
		if e.Kind != Deliver {
			continue
		}
		sp := subPub{e.Client, e.Pub}
		if !expected[sp] {
			continue
		}
		m := msgs[msgKey{e.Pub, e.Seq}]
		if m == nil || !in(m) {
			continue
		}
		if count[sp] == nil {
			count[sp] = map[uint32]int{}
		}
		n := count[sp][e.Seq] + 1
		count[sp][e.Seq] = n
		s := stats(m.qos)
		if n > 1 {
			if persistent[e.Client] {
				s.Duplicates++
				ex := fmt.Sprintf("%s: %s/%d (sent at %s, delivery %d, DUP %t)",
					names(e.Client), names(e.Pub), e.Seq, m.sent.Round(time.Millisecond), n, e.Dup)
				switch {
				case e.Dup || e.QoS != 1:
				case m.resent:
					s.DupResent++
				default:
					s.DupNoFlag++
					if len(s.NoFlagExamples) < 10 {
						s.NoFlagExamples = append(s.NoFlagExamples, ex)
					}
				}
				if len(s.DupExamples) < 10 {
					s.DupExamples = append(s.DupExamples, ex)
				}
			} else {
				s.CleanDuplicates++
			}
			continue
		}
		if seen[sp] && e.Seq < highest[sp] {
			s.Reordered++
			if e.Seq < prev[sp] {
				s.ReorderRuns++
			}
		}
		prev[sp] = e.Seq
		if !seen[sp] || e.Seq > highest[sp] {
			highest[sp], seen[sp] = e.Seq, true
		}
	}

	// What each subscriber was owed.
	keys := make([]msgKey, 0, len(msgs))
	for k, m := range msgs {
		if in(m) && m.acked {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].pub != keys[j].pub {
			return keys[i].pub < keys[j].pub
		}
		return keys[i].seq < keys[j].seq
	})
	for _, x := range expects {
		for _, k := range keys {
			if !expected[subPub{x.Sub, k.pub}] {
				continue
			}
			m := msgs[k]
			s := stats(m.qos)
			got := count[subPub{x.Sub, k.pub}][k.seq] > 0
			if x.Persistent {
				first, ok := firstSub[x.Sub]
				if !ok || m.sent < first {
					continue
				}
				s.Owed++
				if !got {
					s.Lost++
					if len(s.LostExamples) < 10 {
						s.LostExamples = append(s.LostExamples, fmt.Sprintf("%s: %s/%d (sent at %s, acknowledged at %s)",
							names(x.Sub), names(k.pub), k.seq, m.sent.Round(time.Millisecond), m.ack.Round(time.Millisecond)))
					}
				}
				continue
			}
			for _, iv := range connected[x.Sub] {
				if m.sent >= iv.from && m.ack <= iv.to {
					s.CleanOwed++
					if !got {
						s.CleanMissed++
					}
					break
				}
			}
		}
	}

	// The longest stretch without an acknowledgement, per publisher,
	// while it was sending in the window.
	type pubState struct {
		last    time.Duration
		started bool
		qos     uint8
	}
	pubs := map[uint8]*pubState{}
	for _, e := range events {
		if e.At < w.From || e.At >= w.To {
			continue
		}
		switch e.Kind {
		case Send:
			p := pubs[e.Pub]
			if p == nil {
				p = &pubState{last: e.At, qos: e.QoS}
				pubs[e.Pub] = p
			}
			p.started = true
		case Ack:
			if p := pubs[e.Pub]; p != nil {
				s := stats(p.qos)
				s.MaxAckGap = max(s.MaxAckGap, e.At-p.last)
				p.last = e.At
			}
		}
	}
	for _, p := range pubs {
		if p.started {
			s := stats(p.qos)
			s.MaxAckGap = max(s.MaxAckGap, min(w.To, end)-p.last)
		}
	}
	return r
}

var kindNames = [...]string{Send: "send", Ack: "ack", Fail: "fail", Deliver: "deliver",
	Subscribed: "subscribed", Connected: "connected", Disconnected: "disconnected"}

// Dump writes every event, one a line, with its wall-clock time, so that
// a lost message can be followed through the nodes' logs.
func (h *History) Dump(w io.Writer) error {
	h.mu.Lock()
	ev := append([]Event(nil), h.ev...)
	names := append([]string(nil), h.names...)
	start := h.start
	h.mu.Unlock()
	name := func(id uint8) string {
		if int(id) < len(names) {
			return names[id]
		}
		return fmt.Sprintf("#%d", id)
	}
	bw := bufio.NewWriter(w)
	for _, e := range ev {
		k := "?"
		if int(e.Kind) < len(kindNames) && kindNames[e.Kind] != "" {
			k = kindNames[e.Kind]
		}
		fmt.Fprintf(bw, "%s %s %s", start.Add(e.At).UTC().Format("15:04:05.000"), name(e.Client), k)
		switch e.Kind {
		case Send, Ack, Fail, Deliver:
			fmt.Fprintf(bw, " %s/%d qos=%d", name(e.Pub), e.Seq, e.QoS)
			if e.Dup {
				bw.WriteString(" dup")
			}
			if e.PacketID != 0 {
				fmt.Fprintf(bw, " id=%d", e.PacketID)
			}
		case Connected:
			fmt.Fprintf(bw, " n%d present=%t", e.Node+1, e.Present)
		case Subscribed, Disconnected:
			fmt.Fprintf(bw, " n%d", e.Node+1)
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}
