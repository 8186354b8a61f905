package clusterfault

import (
	"strings"
	"testing"
	"time"
)

// script builds a synthetic history: times are milliseconds, in order.
type script struct {
	h  *History
	at time.Duration
}

func newScript() *script { return &script{h: NewHistory()} }

func (s *script) add(e Event) *script {
	s.at += time.Millisecond
	e.At = s.at
	s.h.Add(e)
	return s
}

func (s *script) id(n string) uint8 { return s.h.ID(n) }

func (s *script) subscribed(sub string) *script {
	return s.add(Event{Kind: Subscribed, Client: s.id(sub)})
}

func (s *script) disconnected(sub string) *script {
	return s.add(Event{Kind: Disconnected, Client: s.id(sub)})
}

// pub sends and acknowledges seq (acked false: the publish failed).
func (s *script) pub(p string, qos uint8, seq uint32, acked bool) *script {
	s.add(Event{Kind: Send, Client: s.id(p), Pub: s.id(p), QoS: qos, Seq: seq})
	k := Ack
	if !acked {
		k = Fail
	}
	return s.add(Event{Kind: k, Client: s.id(p), Pub: s.id(p), QoS: qos, Seq: seq})
}

func (s *script) deliver(sub, p string, qos uint8, seq uint32, dup bool) *script {
	return s.add(Event{Kind: Deliver, Client: s.id(sub), Pub: s.id(p), QoS: qos, Seq: seq, Dup: dup})
}

func (s *script) check(expects ...Expect) Report {
	return Check(s.h.Events(), expects, Window{From: 0, To: time.Hour}, s.h.Name)
}

func TestCheckCleanHistory(t *testing.T) {
	s := newScript().subscribed("sub")
	for seq := range uint32(5) {
		s.pub("p1", 1, seq, true).deliver("sub", "p1", 1, seq, false)
		s.pub("p2", 2, seq, true).deliver("sub", "p2", 2, seq, false)
	}
	r := s.check(Expect{Sub: s.id("sub"), Pubs: []uint8{s.id("p1"), s.id("p2")}, Persistent: true})
	for _, q := range []uint8{1, 2} {
		st := r.QoS(q)
		if st.Sent != 5 || st.Acked != 5 || st.Owed != 5 || st.Lost != 0 || st.Duplicates != 0 || st.Reordered != 0 {
			t.Fatalf("QoS %d: %+v, want 5 sent, acked and owed, nothing lost, duplicated or reordered", q, st)
		}
	}
}

func TestCheckFindsPlantedLoss(t *testing.T) {
	s := newScript().subscribed("pin").subscribed("move")
	for seq := range uint32(4) {
		s.pub("p1", 1, seq, true)
		s.deliver("move", "p1", 1, seq, false)
		if seq != 2 { // planted: pin never gets 2
			s.deliver("pin", "p1", 1, seq, false)
		}
	}
	r := s.check(Expect{Sub: s.id("pin"), Pubs: []uint8{s.id("p1")}, Persistent: true},
		Expect{Sub: s.id("move"), Pubs: []uint8{s.id("p1")}, Persistent: true})
	st := r.QoS(1)
	if st.Lost != 1 || st.Owed != 8 {
		t.Fatalf("lost %d of %d owed, want 1 of 8", st.Lost, st.Owed)
	}
	if len(st.LostExamples) != 1 || !strings.HasPrefix(st.LostExamples[0], "pin: p1/2 ") {
		t.Fatalf("lost examples %q, want pin: p1/2", st.LostExamples)
	}
}

func TestCheckUnacknowledgedNotOwed(t *testing.T) {
	s := newScript().subscribed("sub")
	s.pub("p", 1, 0, true).deliver("sub", "p", 1, 0, false)
	s.pub("p", 1, 1, false) // failed publish: may be lost
	r := s.check(Expect{Sub: s.id("sub"), Pubs: []uint8{s.id("p")}, Persistent: true})
	if st := r.QoS(1); st.Lost != 0 || st.Unacked != 1 || st.Acked != 1 {
		t.Fatalf("%+v, want 1 acknowledged, 1 unacknowledged and nothing lost", st)
	}
}

func TestCheckOwedOnlyAfterSubscribing(t *testing.T) {
	s := newScript()
	s.pub("p", 1, 0, true) // before the subscription: not owed
	s.subscribed("sub")
	s.pub("p", 1, 1, true).deliver("sub", "p", 1, 1, false)
	r := s.check(Expect{Sub: s.id("sub"), Pubs: []uint8{s.id("p")}, Persistent: true})
	if st := r.QoS(1); st.Lost != 0 || st.Owed != 1 {
		t.Fatalf("%+v, want 1 owed and nothing lost", st)
	}
}

func TestCheckFindsPlantedDuplicates(t *testing.T) {
	s := newScript().subscribed("sub")
	s.pub("q1", 1, 0, true).deliver("sub", "q1", 1, 0, false).deliver("sub", "q1", 1, 0, true)  // redelivery with DUP
	s.pub("q1", 1, 1, true).deliver("sub", "q1", 1, 1, false).deliver("sub", "q1", 1, 1, false) // without DUP
	s.pub("q2", 2, 0, true).deliver("sub", "q2", 2, 0, false).deliver("sub", "q2", 2, 0, true)  // QoS 2 twice
	r := s.check(Expect{Sub: s.id("sub"), Pubs: []uint8{s.id("q1"), s.id("q2")}, Persistent: true})
	if st := r.QoS(1); st.Duplicates != 2 || st.DupNoFlag != 1 || st.DupResent != 0 || st.Lost != 0 {
		t.Fatalf("QoS 1 %+v, want 2 duplicates, 1 without DUP, nothing lost", st)
	}
	st := r.QoS(2)
	if st.Duplicates != 1 {
		t.Fatalf("QoS 2 %+v, want 1 duplicate", st)
	}
	if len(st.DupExamples) != 1 || !strings.HasPrefix(st.DupExamples[0], "sub: q2/0 ") {
		t.Fatalf("duplicate examples %q, want sub: q2/0", st.DupExamples)
	}
}

// A QoS 1 message whose publisher lost its connection before the PUBACK
// was sent again by it: its second copy, without DUP, is counted apart.
func TestCheckDuplicateOfResentPublish(t *testing.T) {
	s := newScript().subscribed("sub")
	s.add(Event{Kind: Send, Client: s.id("q1"), Pub: s.id("q1"), QoS: 1, Seq: 0})
	s.deliver("sub", "q1", 1, 0, false).disconnected("q1")
	s.add(Event{Kind: Ack, Client: s.id("q1"), Pub: s.id("q1"), QoS: 1, Seq: 0})
	s.deliver("sub", "q1", 1, 0, false)
	r := s.check(Expect{Sub: s.id("sub"), Pubs: []uint8{s.id("q1")}, Persistent: true})
	if st := r.QoS(1); st.Duplicates != 1 || st.DupResent != 1 || st.DupNoFlag != 0 {
		t.Fatalf("QoS 1 %+v, want 1 duplicate, of a resent publish", st)
	}
}

func TestCheckFindsReordering(t *testing.T) {
	s := newScript().subscribed("sub")
	for seq := range uint32(3) {
		s.pub("p", 1, seq, true)
	}
	s.deliver("sub", "p", 1, 0, false).deliver("sub", "p", 1, 2, false).deliver("sub", "p", 1, 1, false)
	r := s.check(Expect{Sub: s.id("sub"), Pubs: []uint8{s.id("p")}, Persistent: true})
	if st := r.QoS(1); st.Reordered != 1 || st.ReorderRuns != 1 || st.Lost != 0 || st.Duplicates != 0 {
		t.Fatalf("%+v, want 1 reordered", st)
	}
	// A backlog delivered after newer messages: several reordered, one run.
	s = newScript().subscribed("sub")
	for seq := range uint32(6) {
		s.pub("p", 1, seq, true)
	}
	for _, seq := range []uint32{0, 4, 5, 1, 2, 3} {
		s.deliver("sub", "p", 1, seq, false)
	}
	r = s.check(Expect{Sub: s.id("sub"), Pubs: []uint8{s.id("p")}, Persistent: true})
	if st := r.QoS(1); st.Reordered != 3 || st.ReorderRuns != 1 {
		t.Fatalf("%+v, want 3 reordered in 1 run", st)
	}
}

func TestCheckWindow(t *testing.T) {
	s := newScript().subscribed("sub")
	s.pub("p", 1, 0, true) // lost, but before the window
	from := s.at + 1
	s.pub("p", 1, 1, true).deliver("sub", "p", 1, 1, false)
	s.pub("p", 1, 2, true) // lost in the window
	to := s.at + 1
	s.pub("p", 1, 3, true) // lost, after it
	r := Check(s.h.Events(), []Expect{{Sub: s.id("sub"), Pubs: []uint8{s.id("p")}, Persistent: true}}, Window{from, to}, nil)
	if st := r.QoS(1); st.Sent != 2 || st.Lost != 1 {
		t.Fatalf("%+v, want 2 sent in the window and 1 lost", st)
	}
}

func TestCheckCleanSubscriberReportedApart(t *testing.T) {
	s := newScript().subscribed("clean")
	s.pub("p", 1, 0, true) // missed while connected
	s.disconnected("clean")
	s.pub("p", 1, 1, true) // sent while away: not owed
	s.subscribed("clean")
	s.pub("p", 1, 2, true).deliver("clean", "p", 1, 2, false).deliver("clean", "p", 1, 2, false)
	r := s.check(Expect{Sub: s.id("clean"), Pubs: []uint8{s.id("p")}})
	st := r.QoS(1)
	if st.Lost != 0 || st.Duplicates != 0 || st.Owed != 0 {
		t.Fatalf("%+v: a clean subscriber counted against the guarantee", st)
	}
	if st.CleanOwed != 2 || st.CleanMissed != 1 || st.CleanDuplicates != 1 {
		t.Fatalf("%+v, want 2 owed while connected, 1 missed, 1 duplicate", st)
	}
}

func TestCheckMaxAckGap(t *testing.T) {
	h := NewHistory()
	p := h.ID("p")
	for i, at := range []time.Duration{0, 10, 20, 520, 530} { // ms; a 500 ms stall
		h.Add(Event{At: at*time.Millisecond + 1, Kind: Send, Pub: p, Client: p, QoS: 1, Seq: uint32(i)})
		h.Add(Event{At: at*time.Millisecond + 2, Kind: Ack, Pub: p, Client: p, QoS: 1, Seq: uint32(i)})
	}
	r := Check(h.Events(), nil, Window{0, time.Hour}, nil)
	if got := r.QoS(1).MaxAckGap; got != 500*time.Millisecond {
		t.Fatalf("max ack gap %s, want 500ms", got)
	}
}

func TestHistoryIndexes(t *testing.T) {
	h := NewHistory()
	sub, p := h.ID("sub"), h.ID("p")
	h.Add(Event{Kind: Ack, Pub: p, Seq: 3})
	h.Add(Event{Kind: Deliver, Client: sub, Pub: p, Seq: 7})
	if !h.Acked(p, 3) || h.Acked(p, 2) || h.Acked(p, 100) {
		t.Fatal("Acked index wrong")
	}
	if !h.Delivered(sub, p, 7) || h.Delivered(sub, p, 3) || h.Delivered(p, sub, 7) {
		t.Fatal("Delivered index wrong")
	}
}
