package broker

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	h.Observe(50 * time.Microsecond) // first bucket (0.1 ms)
	h.Observe(3 * time.Millisecond)  // 5 ms bucket
	h.Observe(10 * time.Second)      // +Inf only
	b, count, sum := h.Snapshot()
	if count != 3 || b[0.0001] != 1 || b[0.0025] != 1 || b[0.005] != 2 || b[2.5] != 2 {
		t.Errorf("buckets %v count %d", b, count)
	}
	if sum < 10.003 || sum > 10.0031 {
		t.Errorf("sum %v, want 10.00305", sum)
	}
}

func TestTopicSampler(t *testing.T) {
	b := New(config.Default().Limits, nil)
	b.topics.add("a", 10, 1) // off: not counted
	if top, _ := b.SampleTopics(10); top != nil {
		t.Fatalf("first sample %v, want nothing (sampling starts now)", top)
	}
	for range 3 {
		b.topics.add("a", 10, 2)
	}
	b.topics.add("b", 1, 0)
	top, other := b.SampleTopics(10)
	if len(top) != 2 || top[0] != (TopicTraffic{"a", 3, 30, 6}) || top[1] != (TopicTraffic{"b", 1, 1, 0}) || other.Messages != 0 {
		t.Errorf("sample: %+v other %+v", top, other)
	}
	if top, _ := b.SampleTopics(10); len(top) != 0 {
		t.Errorf("second sample with no traffic: %+v", top)
	}
	// More topics than slots: the late ones are counted as other, and
	// every message is counted once.
	for i := range topicSlots * 2 {
		b.topics.add(fmt.Sprint("t/", i), 1, 0)
	}
	top, other = b.SampleTopics(0)
	var n uint64
	for _, x := range top {
		n += x.Messages
	}
	if n+other.Messages != topicSlots*2 || other.Messages == 0 || len(top) > topicSlots {
		t.Errorf("%d topics with %d messages, other %d; want %d in all", len(top), n, other.Messages, topicSlots*2)
	}
	// Stopped, nothing is counted, and a restart begins afresh.
	b.topics.add("a", 1, 1)
	b.StopTopicSampling()
	b.topics.add("a", 1, 1)
	if top, _ := b.SampleTopics(10); top != nil {
		t.Errorf("restart: %+v", top)
	}
	if top, _ := b.SampleTopics(10); len(top) != 0 {
		t.Errorf("after a restart with no traffic: %+v", top)
	}
}

func TestTraceBounds(t *testing.T) {
	tr := &Trace{Filter: "x/#", Rate: 5}
	now := time.Now()
	big := bytes.Repeat([]byte("p"), 1000)
	for i := range 8 {
		tr.add(TraceEvent{Time: now.Add(time.Duration(i) * time.Millisecond), Type: "PUBLISH", Payload: big})
	}
	ev, dropped := tr.Drain()
	if len(ev) != 5 || dropped != 3 || len(ev[0].Payload) != maxTracePayload {
		t.Errorf("%d events, %d dropped, payload %d bytes", len(ev), dropped, len(ev[0].Payload))
	}
	// A new second opens a new window.
	tr.add(TraceEvent{Time: now.Add(2 * time.Second)})
	if ev, dropped := tr.Drain(); len(ev) != 1 || dropped != 0 {
		t.Errorf("next second: %d events, %d dropped", len(ev), dropped)
	}
	// The message filter applies; a client trace ignores other clients.
	tr.message(nil, "in", "y/1", 0, false, 0, nil)
	tr.message(nil, "in", "x/1", 0, false, 0, nil)
	ct := &Trace{ClientID: "c1", Rate: 50}
	ct.message(&client{id: "c2"}, "out", "x/1", 1, false, 7, nil)
	ct.message(&client{id: "c1"}, "out", "x/1", 1, false, 7, []byte("hi"))
	if ev, _ := tr.Drain(); len(ev) != 1 || ev[0].Topic != "x/1" {
		t.Errorf("filter trace: %+v", ev)
	}
	if ev, _ := ct.Drain(); len(ev) != 1 || ev[0].ClientID != "c1" || ev[0].PacketID != 7 || string(ev[0].Payload) != "hi" {
		t.Errorf("client trace: %+v", ev)
	}
}

// BenchmarkTopicSampler: the per-PUBLISH cost of top-topic sampling while
// someone watches (no allocation once a topic holds its slot).
func BenchmarkTopicSampler(b *testing.B) {
	br := New(config.Default().Limits, nil)
	br.SampleTopics(0)
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprint("plant/line-", i, "/temperature")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		br.topics.add(names[i%len(names)], 64, 1)
	}
}
