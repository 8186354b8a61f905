package broker

import (
	"fmt"
	"testing"

	"github.com/starling-mqtt/starling/internal/config"
)

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
