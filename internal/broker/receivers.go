package broker

import (
	"sort"

	"github.com/starling-mqtt/starling/internal/topic"
)

// Receiver is a subscription that matches a topic: its session would get
// a message published there (one member per $share group).
type Receiver struct {
	ClientID  string
	Filter    string // the filter as subscribed, without $share/<group>/
	Group     string // share group, "" for a plain subscription
	QoS       byte
	NoLocal   bool
	Connected bool
	// Allowed is the ACL's answer for reading the topic; a subscription
	// the ACL denies gets nothing.
	Allowed bool
}

// Receivers lists the subscriptions matching a topic name, sorted by
// group, client ID and filter.
func (b *Broker) Receivers(topicName string) ([]Receiver, error) {
	if err := topic.ValidateName(topicName); err != nil {
		return nil, err
	}
	entries := b.subs.Match(topicName, nil)
	out := make([]Receiver, 0, len(entries))
	for _, e := range entries {
		cl := e.Value.cl
		out = append(out, Receiver{ClientID: cl.id, Filter: e.Filter, Group: e.Group, QoS: e.Value.opts.QoS,
			NoLocal: e.Value.opts.NoLocal, Connected: cl.isOnline(), Allowed: b.allow(cl.info.Load(), ActRead, topicName)})
	}
	sort.Slice(out, func(i, j int) bool {
		a, c := out[i], out[j]
		if a.Group != c.Group {
			return a.Group < c.Group
		}
		if a.ClientID != c.ClientID {
			return a.ClientID < c.ClientID
		}
		return a.Filter < c.Filter
	})
	return out, nil
}

// SubscriptionCount returns the number of this node's subscriptions
// whose filter matches the topic name (shared ones included, each member
// counted), leaving out those of the client except ("" for none). It reads
// the subscription index without allocating.
func (b *Broker) SubscriptionCount(topicName, except string) int {
	return b.subs.Count(topicName, except)
}

// Subscribed reports whether any subscription matches a topic name: the
// broker's feeds compute nothing for topics nobody receives.
func (b *Broker) Subscribed(topicName string) bool {
	return len(b.subs.Match(topicName, nil)) > 0
}
