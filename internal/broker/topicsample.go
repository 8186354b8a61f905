package broker

import (
	"hash/maphash"
	"sort"
	"sync/atomic"
)

// Topic traffic sampling, for "top topics". It runs only while Enable has
// been called within the last sampling period (someone watches), and
// costs then a hash and a few atomic operations per PUBLISH. Topics share
// a fixed number of slots: while a slot is taken in a period, another
// topic hashing to it is counted as "other" (topTopicsOther).
const topicSlots = 4096

type topicSlot struct {
	name  atomic.Pointer[string]
	msgs  atomic.Uint64
	bytes atomic.Uint64
	fan   atomic.Uint64 // deliveries
}

func (sl *topicSlot) reset() {
	sl.name.Store(nil)
	sl.msgs.Store(0)
	sl.bytes.Store(0)
	sl.fan.Store(0)
}

type topicSampler struct {
	seed    maphash.Seed
	enabled atomic.Bool
	slots   [topicSlots]topicSlot
	other   topicSlot
}

// TopicTraffic is one topic's traffic in a sampling period.
type TopicTraffic struct {
	Topic      string
	Messages   uint64
	Bytes      uint64
	Deliveries uint64
}

func (s *topicSampler) add(name string, payload, delivered int) {
	if !s.enabled.Load() {
		return
	}
	sl := &s.slots[maphash.String(s.seed, name)%topicSlots]
	cur := sl.name.Load()
	if cur == nil {
		n := name
		if !sl.name.CompareAndSwap(nil, &n) {
			cur = sl.name.Load()
		}
	}
	if cur != nil && *cur != name {
		sl = &s.other
	}
	sl.msgs.Add(1)
	sl.bytes.Add(uint64(payload))
	sl.fan.Add(uint64(delivered))
}

// SampleTopics turns topic sampling on and returns the topics counted
// since the last call (none on the first), busiest first, at most limit,
// plus the traffic of topics that did not get a slot. Call it once per
// period from one goroutine; stop calling and call StopTopicSampling when
// nobody watches.
func (b *Broker) SampleTopics(limit int) (top []TopicTraffic, other TopicTraffic) {
	s := &b.topics
	if !s.enabled.Swap(true) {
		// Leftovers from an earlier sampling would skew the first rates.
		for i := range s.slots {
			s.slots[i].reset()
		}
		s.other.reset()
		return nil, TopicTraffic{}
	}
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.name.Load() == nil {
			continue
		}
		// The name goes first: a message counted between the swaps lands
		// in the next period under whoever takes the slot, at worst.
		n := sl.name.Swap(nil)
		t := TopicTraffic{Messages: sl.msgs.Swap(0), Bytes: sl.bytes.Swap(0), Deliveries: sl.fan.Swap(0)}
		if n == nil || t.Messages == 0 {
			continue
		}
		t.Topic = *n
		top = append(top, t)
	}
	other = TopicTraffic{Topic: "", Messages: s.other.msgs.Swap(0), Bytes: s.other.bytes.Swap(0), Deliveries: s.other.fan.Swap(0)}
	sort.Slice(top, func(i, j int) bool {
		if top[i].Bytes != top[j].Bytes {
			return top[i].Bytes > top[j].Bytes
		}
		return top[i].Topic < top[j].Topic
	})
	if limit > 0 && len(top) > limit {
		top = top[:limit]
	}
	return top, other
}

// StopTopicSampling turns topic sampling off.
func (b *Broker) StopTopicSampling() {
	b.topics.enabled.Store(false)
}
