package broker

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
)

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
