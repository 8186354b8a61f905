package admin

import "time"

// FeedTopics carries a TopicsFeed: the rates of the topics published to in
// the last interval, for the dashboard's topic tree.
const FeedTopics = "$SYS/starling/dashboard/topics"

// maxFeedTopics bounds a TopicsFeed: the busiest topics by bytes, so that
// a broker with a million topics sends a bounded payload each interval.
const maxFeedTopics = 500

// TopicsFeed is the payload of FeedTopics: per-topic rates over the last
// interval, computed in the broker by the same sampler as FeedTop. A topic
// that had no message in the interval is absent (its rate is 0), unless
// Truncated says more topics had traffic than the feed holds.
type TopicsFeed struct {
	Time      int64      `json:"t"`
	Seconds   float64    `json:"interval_seconds"`
	Topics    []TopTopic `json:"topics"`          // busiest first, at most maxFeedTopics
	Truncated bool       `json:"truncated"`       // quieter topics left out
	Other     *TopTopic  `json:"other,omitempty"` // topics that found no sampling slot
}

func (f *feed) publishTopics(now time.Time, s topicSample) error {
	out := TopicsFeed{Time: now.UnixMilli(), Seconds: s.dt, Topics: make([]TopTopic, 0, min(len(s.topics), maxFeedTopics))}
	for i, t := range s.topics {
		if i == maxFeedTopics {
			out.Truncated = true
			break
		}
		out.Topics = append(out.Topics, topTopic(t, s.dt))
	}
	if s.other.Messages > 0 {
		o := topTopic(s.other, s.dt)
		out.Other = &o
	}
	return f.publishJSON(FeedTopics, out)
}
