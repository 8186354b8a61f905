package admin

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"iter"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/topic"
)

// More dashboard feeds. Each is computed only while a subscription
// matches its topic, at most once per feed interval (the trace feed
// included: its events are batched).
const (
	// FeedTop carries a TopFeed: the busiest topics and clients.
	FeedTop = "$SYS/starling/dashboard/top"
	// FeedSessions carries a SessionsFeed: sessions and $share groups.
	FeedSessions = "$SYS/starling/dashboard/sessions"
	// FeedAlerts carries an AlertsFeed: slow consumers and drops.
	FeedAlerts = "$SYS/starling/dashboard/alerts"
	// FeedTrace carries a TraceFeed while a trace runs (POST /api/v1/trace).
	FeedTrace = "$SYS/starling/dashboard/trace"
)

const (
	maxTop          = 10
	maxFeedSessions = 200
	maxAlerts       = 50 // alert groups kept: one per client and kind
	// minClientsGap is the shortest time between two client lists pushed
	// on connects and disconnects: a storm of them costs one list per gap.
	minClientsGap = 250 * time.Millisecond
)

// TopFeed is the payload of FeedTop: rates over the last interval.
type TopFeed struct {
	Time    int64       `json:"t"`
	Seconds float64     `json:"interval_seconds"`
	Topics  []TopTopic  `json:"topics"`
	Other   *TopTopic   `json:"other,omitempty"` // topics that found no sampling slot
	Clients []TopClient `json:"clients"`
}

// TopTopic is one topic's publish traffic.
type TopTopic struct {
	Topic      string  `json:"topic,omitempty"`
	Messages   float64 `json:"messages_per_second"`
	Bytes      float64 `json:"bytes_per_second"`
	Deliveries float64 `json:"deliveries_per_second"`
}

// DashboardClientPrefix begins the client ID of the dashboard's own MQTT
// connection. Such clients are marked in the top and clients feeds, and
// their deliveries are left out of topic traces, so that operators tell
// the console's own load from the broker's.
const DashboardClientPrefix = "starling-dashboard-"

func isDashboard(clientID string) bool { return strings.HasPrefix(clientID, DashboardClientPrefix) }

// TopClient is one client's traffic, both ways.
type TopClient struct {
	ClientID    string  `json:"client_id"`
	Dashboard   bool    `json:"dashboard,omitempty"` // a dashboard's own connection
	MessagesIn  float64 `json:"messages_in_per_second"`
	BytesIn     float64 `json:"bytes_in_per_second"`
	MessagesOut float64 `json:"messages_out_per_second"`
	BytesOut    float64 `json:"bytes_out_per_second"`
}

// SessionsFeed is the payload of FeedSessions.
type SessionsFeed struct {
	Time      int64         `json:"t"`
	Total     int           `json:"total"`
	Sessions  []FeedSession `json:"sessions"` // the first maxFeedSessions by client ID
	Truncated bool          `json:"truncated"`
	Shared    []ShareGroup  `json:"shared"`
}

// FeedSession is one session in SessionsFeed.
type FeedSession struct {
	ClientID      string `json:"client_id"`
	Connected     bool   `json:"connected"`
	Persistent    bool   `json:"persistent"`
	Expiry        uint32 `json:"session_expiry_interval"`
	Subscriptions int    `json:"subscriptions"`
	Inflight      int    `json:"inflight"`
	Queued        int    `json:"queued"`
}

// ShareGroup is a $share group on one filter and its members.
type ShareGroup struct {
	Group   string        `json:"group"`
	Filter  string        `json:"filter"`
	Members []ShareMember `json:"members"`
}

// ShareMember is a session in a share group.
type ShareMember struct {
	ClientID  string `json:"client_id"`
	Connected bool   `json:"connected"`
	QoS       byte   `json:"qos"`
}

// AlertsFeed is the payload of FeedAlerts: the alerts, the most recently
// raised first.
type AlertsFeed struct {
	Time   int64   `json:"t"`
	Alerts []Alert `json:"alerts"`
}

// Alert is a slow consumer, dropped deliveries or refused connections
// (WebSocket upgrades, logins): one per client and
// kind, raised again at every tick the condition holds, so that one busy
// client takes one slot however often it is raised.
type Alert struct {
	Time     int64  `json:"t"`     // last raised, Unix milliseconds
	First    int64  `json:"first"` // first raised
	Times    int    `json:"times"` // raised this often (once per tick at most)
	Kind     string `json:"kind"`  // "slow_consumer", "dropped", "ws_refused" or "auth_refused"
	ClientID string `json:"client_id,omitempty"`
	Count    uint64 `json:"count,omitempty"` // dropped deliveries or refusals, over all times
	Detail   string `json:"detail"`          // of the last time
	// Acked is set by an operator (POST /api/v1/alerts/ack); it stays
	// while the alert keeps being raised, and is cleared when it is
	// raised again after it had stopped.
	Acked   bool  `json:"acked,omitempty"`
	AckedAt int64 `json:"acked_at,omitempty"`
}

// TraceFeed is the payload of FeedTrace: the packets seen since the last.
type TraceFeed struct {
	Time     int64         `json:"t"`
	ClientID string        `json:"client_id,omitempty"`
	Topic    string        `json:"topic,omitempty"`
	Events   []TracePacket `json:"events"`
	Dropped  uint64        `json:"dropped"` // over the trace's rate or bound
	// Hidden counts the packets to and from dashboards left out of a
	// topic trace (a client trace shows every packet of its client).
	Hidden int `json:"dashboard_hidden,omitempty"`
}

// TracePacket is one traced packet.
type TracePacket struct {
	Time          int64  `json:"t"`
	ClientID      string `json:"client_id,omitempty"`
	Direction     string `json:"direction"` // "in": from the client; "out": to it
	Type          string `json:"type"`
	Topic         string `json:"topic,omitempty"`
	QoS           byte   `json:"qos"`
	Retain        bool   `json:"retain,omitempty"`
	PacketID      uint16 `json:"packet_id,omitempty"`
	Size          int    `json:"size"`
	Payload       string `json:"payload,omitempty"` // first 256 bytes, when UTF-8
	PayloadBase64 string `json:"payload_base64,omitempty"`
}

// tickLive publishes the feeds beyond the overview that someone watches.
// The caller holds f.mu.
func (f *feed) tickLive(now time.Time) error {
	var errs []error
	var traffics []broker.ClientTraffic
	getTraffics := func() []broker.ClientTraffic {
		if traffics == nil {
			traffics = f.b.Traffics()
		}
		return traffics
	}
	wantTop, wantTopics := f.b.Subscribed(FeedTop), f.b.Subscribed(FeedTopics)
	if wantTop || wantTopics {
		s, ok := f.sampleTopics(now, getTraffics())
		if ok && wantTop {
			errs = append(errs, f.publishTop(now, s))
		}
		if ok && wantTopics {
			errs = append(errs, f.publishTopics(now, s))
		}
	} else if f.topOn {
		f.b.StopTopicSampling()
		f.topOn, f.prevTop = false, nil
	}
	if f.b.Subscribed(FeedSessions) {
		errs = append(errs, f.publishSessions(now))
	}
	// Alerts are looked for at every tick, watched or not, so that a page
	// opened later sees the last ones.
	if traffics != nil {
		f.checkAlertsIn(now, slices.Values(traffics))
	} else {
		f.checkAlertsIn(now, f.b.AllTraffic())
	}
	if f.b.Subscribed(FeedAlerts) {
		errs = append(errs, f.publishJSON(FeedAlerts, AlertsFeed{Time: now.UnixMilli(), Alerts: append([]Alert{}, f.alerts...)}))
	}
	if f.b.Subscribed(FeedCluster) {
		st := f.lastCluster // read by this tick's overview
		if f.cluster == nil || st != nil {
			errs = append(errs, f.publishCluster(now, st))
		}
	}
	if f.b.Subscribed(FeedEvents) {
		errs = append(errs, f.publishEvents(now))
	}
	if tr := f.b.CurrentTrace(); tr != nil {
		if !f.b.Subscribed(FeedTrace) {
			f.b.SetTrace(nil) // nobody watches: tracing costs nothing again
		} else {
			errs = append(errs, f.publishTrace(now, tr))
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (f *feed) publishJSON(topicName string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("feed %s: %w", topicName, err)
	}
	if _, err := f.b.Publish(topicName, body, 0, false); err != nil {
		return fmt.Errorf("feed %s: %w", topicName, err)
	}
	return nil
}

// topicSample is one reading of the topic sampler and of the clients'
// traffic counters, with the previous one for the clients' rates.
type topicSample struct {
	dt        float64 // seconds since the previous reading
	topics    []broker.TopicTraffic
	other     broker.TopicTraffic
	cur, prev map[string]broker.ClientTraffic
}

// sampleTopics takes a reading for the top and topics feeds; ok is false
// on the first (rates need two readings).
func (f *feed) sampleTopics(now time.Time, ts []broker.ClientTraffic) (topicSample, bool) {
	topics, other := f.b.SampleTopics(0)
	first := !f.topOn
	f.topOn = true
	dt := now.Sub(f.topAt).Seconds()
	f.topAt = now
	cur := make(map[string]broker.ClientTraffic, len(ts))
	for _, c := range ts {
		cur[c.ClientID] = c
	}
	prev := f.prevTop
	f.prevTop = cur
	if first || dt <= 0 {
		return topicSample{}, false
	}
	return topicSample{dt: dt, topics: topics, other: other, cur: cur, prev: prev}, true
}

func topTopic(t broker.TopicTraffic, dt float64) TopTopic {
	return TopTopic{Topic: t.Topic, Messages: float64(t.Messages) / dt, Bytes: float64(t.Bytes) / dt, Deliveries: float64(t.Deliveries) / dt}
}

func (f *feed) publishTop(now time.Time, s topicSample) error {
	dt, cur, prev := s.dt, s.cur, s.prev
	out := TopFeed{Time: now.UnixMilli(), Seconds: dt, Topics: []TopTopic{}, Clients: []TopClient{}}
	for _, t := range s.topics[:min(len(s.topics), maxTop)] {
		out.Topics = append(out.Topics, topTopic(t, dt))
	}
	if s.other.Messages > 0 {
		o := topTopic(s.other, dt)
		out.Other = &o
	}
	for id, c := range cur {
		p, ok := prev[id]
		if !ok || c.MessagesIn < p.MessagesIn || c.MessagesOut < p.MessagesOut {
			p = broker.ClientTraffic{} // new session since the last reading
		}
		tc := TopClient{ClientID: id, Dashboard: isDashboard(id), MessagesIn: float64(c.MessagesIn-p.MessagesIn) / dt, BytesIn: float64(c.BytesIn-p.BytesIn) / dt,
			MessagesOut: float64(c.MessagesOut-p.MessagesOut) / dt, BytesOut: float64(c.BytesOut-p.BytesOut) / dt}
		if tc.MessagesIn+tc.MessagesOut > 0 {
			out.Clients = append(out.Clients, tc)
		}
	}
	sort.Slice(out.Clients, func(i, j int) bool {
		a, b := out.Clients[i], out.Clients[j]
		if x, y := a.BytesIn+a.BytesOut, b.BytesIn+b.BytesOut; x != y {
			return x > y
		}
		return a.ClientID < b.ClientID
	})
	if len(out.Clients) > maxTop {
		out.Clients = out.Clients[:maxTop]
	}
	return f.publishJSON(FeedTop, out)
}

// shareGroups gathers the $share groups from the sessions' subscriptions.
func shareGroups(ss []broker.ClientSummary) []ShareGroup {
	idx := map[string]int{}
	var out []ShareGroup
	for _, s := range ss {
		for _, sub := range s.Subscriptions {
			group, filter, ok := topic.ParseShared(sub.Filter)
			if !ok {
				continue
			}
			k := group + "\x00" + filter
			i, seen := idx[k]
			if !seen {
				i = len(out)
				idx[k] = i
				out = append(out, ShareGroup{Group: group, Filter: filter})
			}
			out[i].Members = append(out[i].Members, ShareMember{ClientID: s.ClientID, Connected: s.Connected, QoS: sub.QoS})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Filter < out[j].Filter
	})
	if out == nil {
		out = []ShareGroup{}
	}
	return out
}

func (f *feed) publishSessions(now time.Time) error {
	ss := f.b.Clients() // sorted by client ID
	out := SessionsFeed{Time: now.UnixMilli(), Total: len(ss), Sessions: []FeedSession{}, Shared: shareGroups(ss)}
	for _, s := range ss {
		if len(out.Sessions) == maxFeedSessions {
			out.Truncated = true
			break
		}
		out.Sessions = append(out.Sessions, FeedSession{ClientID: s.ClientID, Connected: s.Connected, Persistent: s.Persistent,
			Expiry: s.ExpiryInterval, Subscriptions: len(s.Subscriptions), Inflight: s.Inflight, Queued: s.Queued})
	}
	return f.publishJSON(FeedSessions, out)
}

// clientMark is what checkAlerts saw of a client at the last tick.
type clientMark struct {
	drops   uint64
	held    time.Duration
	actions uint64
	full    bool   // inflight window full
	out     uint64 // messages sent
}

// checkAlerts raises an alert for each client that dropped deliveries
// since the last tick, and a slow-consumer alert for each connected client
// that
//   - held publishers back since the last tick (flow control),
//   - met the slow-consumer policy since the last tick,
//   - has its queue half full, or
//   - had its own inflight window (its Receive Maximum, or max_inflight
//     if smaller) full at this tick and the last, with messages waiting
//     or nothing sent in between,
//
// and keeps them grouped per client and kind (raise).
func (f *feed) checkAlerts(now time.Time, ts []broker.ClientTraffic) {
	f.checkAlertsIn(now, slices.Values(ts))
}

// checkAlertsIn is checkAlerts over clients given one at a time.
func (f *feed) checkAlertsIn(now time.Time, ts iter.Seq[broker.ClientTraffic]) {
	maxQ, _ := f.b.QueueLimits()
	o := f.alertOpts
	first := f.marks == nil
	dt := now.Sub(f.alertsAt).Seconds()
	if f.alertsAt.IsZero() || dt <= 0 {
		dt = 1
	}
	f.alertsAt = now
	// overDrops: more drops than alerts.dropped_per_second allows.
	overDrops := func(n uint64) bool { return float64(n) > o.DroppedPerSecond*dt }
	// Only clients with something to compare are kept: a missing mark
	// reads as a zero one, and most clients (idle ones) have nothing.
	cur := make(map[string]clientMark)
	var perClient uint64
	var fresh []Alert
	ms := now.UnixMilli()
	for c := range ts {
		d := c.DroppedQueue + c.DroppedExpired + c.DroppedTooLarge
		m := clientMark{drops: d, held: c.Flow.HeldFor, actions: c.Flow.PolicyActions,
			full: c.Connected && c.Window > 0 && c.Inflight >= c.Window, out: c.MessagesOut}
		if m != (clientMark{out: m.out}) {
			cur[c.ClientID] = m
		}
		p, seen := f.marks[c.ClientID]
		if !first && d > p.drops && overDrops(d-p.drops) {
			n := d - p.drops
			perClient += n
			detail := fmt.Sprintf("%d deliveries dropped (so far: queue full %d, expired %d, too large %d)", n, c.DroppedQueue, c.DroppedExpired, c.DroppedTooLarge)
			if !seen {
				detail = fmt.Sprintf("%d deliveries dropped", d)
			}
			fresh = append(fresh, Alert{Time: ms, Kind: "dropped", ClientID: c.ClientID, Count: n, Detail: detail})
		}
		if !c.Connected {
			continue
		}
		switch {
		case first:
			// No baseline: what flow control did before is not news, and
			// a full window counts from this tick.
			p = clientMark{held: m.held, actions: m.actions, out: m.out}
		case !seen:
			p = clientMark{} // connected since the last tick: all it has is new
		}
		var why []string
		if dh := m.held - p.held; dh > 0 {
			why = append(why, fmt.Sprintf("held publishers back %.1f s since the last check (%.1f s in all)", dh.Seconds(), m.held.Seconds()))
		}
		if da := m.actions - p.actions; m.actions > p.actions {
			why = append(why, fmt.Sprintf("slow-consumer policy acted %d times (%d in all)", da, m.actions))
		}
		if c.Flow.Shedding && len(why) > 0 {
			why = append(why, "shedding")
		}
		stalled := m.full && p.full && (c.Queued > 0 || m.out == p.out)
		queueFull := maxQ > 0 && o.QueueFraction > 0 && float64(c.Queued) >= o.QueueFraction*float64(maxQ)
		if stalled || queueFull || len(why) > 0 {
			why = append([]string{fmt.Sprintf("inflight %d of its window %d, queued %d of %d", c.Inflight, c.Window, c.Queued, maxQ)}, why...)
		}
		if len(why) > 0 {
			fresh = append(fresh, Alert{Time: ms, Kind: "slow_consumer", ClientID: c.ClientID, Detail: strings.Join(why, "; ")})
		}
	}
	// Drops no session counts (slow readers' QoS 0, $share leftovers).
	total := f.src.Counters().Dropped
	if n := total - min(total, f.prevDropTotal+perClient); !first && n > 0 && overDrops(n) {
		fresh = append(fresh, Alert{Time: ms, Kind: "dropped", Count: n,
			Detail: fmt.Sprintf("%d deliveries dropped for slow readers or $share groups without members", n)})
	}
	f.marks, f.prevDropTotal = cur, total
	fresh = append(fresh, f.refusalAlerts(ms)...)
	if o.MaxConnections > 0 {
		if n := f.src.Counters().Connected; n > int64(o.MaxConnections) {
			fresh = append(fresh, Alert{Time: ms, Kind: "connections",
				Detail: fmt.Sprintf("%d clients connected, over alerts.max_connections %d", n, o.MaxConnections)})
		}
	}
	if n := f.refusedLastMinute(now); o.RefusedPerMinute > 0 && n > uint64(o.RefusedPerMinute) {
		fresh = append(fresh, Alert{Time: ms, Kind: "refused_logins",
			Detail: fmt.Sprintf("%d logins refused in the last minute, over alerts.refused_per_minute %d", n, o.RefusedPerMinute)})
	}
	for _, a := range fresh {
		f.raise(a)
	}
}

// refusalAlerts raises one alert per kind of refusal whose count grew
// since the last tick (all of them at the first: a refused page is news
// whenever it happened).
func (f *feed) refusalAlerts(ms int64) []Alert {
	if f.refusals == nil {
		return nil
	}
	if f.prevRefusals == nil {
		f.prevRefusals = make(map[string]uint64)
	}
	var out []Alert
	for _, r := range f.refusals() {
		if p := f.prevRefusals[r.Kind]; r.Count > p {
			out = append(out, Alert{Time: ms, Kind: r.Kind, Count: r.Count - p, Detail: r.Detail})
		}
		f.prevRefusals[r.Kind] = r.Count
	}
	return out
}

// raise adds a to its client's and kind's group, which moves to the
// front; a new group past maxAlerts pushes out the one raised longest ago.
// The list is short and changes at most once per tick per client, so a
// linear search is cheap.
func (f *feed) raise(a Alert) {
	i := 0
	for i < len(f.alerts) && (f.alerts[i].ClientID != a.ClientID || f.alerts[i].Kind != a.Kind) {
		i++
	}
	if i < len(f.alerts) {
		g := f.alerts[i]
		a.First, a.Times, a.Count = g.First, g.Times+1, g.Count+a.Count
		a.Acked, a.AckedAt = g.Acked, g.AckedAt
		if gap := time.Duration(a.Time-g.Time) * time.Millisecond; gap > reopenAfter*f.iv {
			// It had stopped and came back: news again.
			a.Acked, a.AckedAt = false, 0
			f.hook.send(WebhookPayload{Alert: a, Version: f.version, Node: f.node})
		}
	} else {
		a.First, a.Times = a.Time, 1
		f.hook.send(WebhookPayload{Alert: a, Version: f.version, Node: f.node})
		if f.alerts == nil {
			f.alerts = make([]Alert, 0, maxAlerts) // never grows past it
		}
		if len(f.alerts) < maxAlerts {
			f.alerts = append(f.alerts, Alert{})
		}
		i = len(f.alerts) - 1 // the last: a new slot, or the oldest group, replaced
	}
	copy(f.alerts[1:i+1], f.alerts[:i])
	f.alerts[0] = a
}

func (f *feed) publishTrace(now time.Time, tr *broker.Trace) error {
	evs, dropped := tr.Drain()
	if len(evs) == 0 && dropped == 0 {
		return nil
	}
	out := TraceFeed{Time: now.UnixMilli(), ClientID: tr.ClientID, Topic: tr.Filter, Events: make([]TracePacket, 0, len(evs)), Dropped: dropped}
	for _, e := range evs {
		if tr.ClientID == "" && isDashboard(e.ClientID) {
			out.Hidden++
			continue
		}
		p := TracePacket{Time: e.Time.UnixMilli(), ClientID: e.ClientID, Direction: e.Direction, Type: e.Type, Topic: e.Topic,
			QoS: e.QoS, Retain: e.Retain, PacketID: e.PacketID, Size: e.Size}
		if utf8.Valid(e.Payload) {
			p.Payload = string(e.Payload)
		} else {
			p.PayloadBase64 = base64.StdEncoding.EncodeToString(e.Payload)
		}
		out.Events = append(out.Events, p)
	}
	return f.publishJSON(FeedTrace, out)
}

// traceTarget describes a trace for the API.
func traceTarget(tr *broker.Trace) map[string]any {
	if tr == nil {
		return map[string]any{"tracing": false}
	}
	m := map[string]any{"tracing": true, "rate": tr.Rate}
	if tr.ClientID != "" {
		m["client_id"] = tr.ClientID
	} else {
		m["topic"] = tr.Filter
	}
	return m
}
