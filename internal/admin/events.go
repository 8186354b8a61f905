package admin

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
)

// FeedEvents carries an EventsFeed: the recent refusals and denials.
const FeedEvents = "$SYS/starling/dashboard/events"

const (
	maxEventLog  = 500 // events kept by the broker
	maxFeedLog   = 100 // of them in each FeedEvents message
	coalesceLast = 8   // a repeat of one of the last this many events counts there
)

// LogEvent is one entry of the event history: a refused login, an ACL
// denial, a refused WebSocket origin, a slow-consumer action, or anything
// else a source records. Repeats of one of the latest entries (same kind,
// client, user, address, topic and reason) count in it instead of taking
// new slots (the address compared without its port), so one client
// retrying in a loop takes one line.
type LogEvent struct {
	Time     int64  `json:"t"`     // last seen, Unix ms
	First    int64  `json:"first"` // first seen
	Count    int    `json:"count"` // times seen
	Kind     string `json:"kind"`
	ClientID string `json:"client_id,omitempty"`
	Username string `json:"username,omitempty"`
	Remote   string `json:"remote,omitempty"`
	Listener string `json:"listener,omitempty"`
	Topic    string `json:"topic,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// eventLog is a bounded ring of LogEvents, kept whether or not anybody
// watches, so a page opened later sees them.
type eventLog struct {
	mu     sync.Mutex
	buf    [maxEventLog]LogEvent
	next   int // slot of the next new entry
	n      int
	totals map[string]uint64 // events by kind since start, repeats included
	seq    uint64            // changes, for the feed
}

func (l *eventLog) record(e broker.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	ms := e.Time.UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.totals == nil {
		l.totals = make(map[string]uint64)
	}
	l.totals[e.Kind]++
	l.seq++
	for i := 1; i <= min(coalesceLast, l.n); i++ {
		x := &l.buf[(l.next-i+maxEventLog)%maxEventLog]
		if x.Kind == e.Kind && x.ClientID == e.ClientID && x.Username == e.Username && hostOf(x.Remote) == hostOf(e.Remote) &&
			x.Topic == e.Topic && x.Reason == e.Reason && x.Listener == e.Listener {
			x.Count++
			x.Time = max(x.Time, ms)
			x.Remote = e.Remote // the latest connection's port
			return
		}
	}
	l.buf[l.next] = LogEvent{Time: ms, First: ms, Count: 1, Kind: e.Kind, ClientID: e.ClientID, Username: e.Username,
		Remote: e.Remote, Listener: e.Listener, Topic: e.Topic, Reason: e.Reason}
	l.next = (l.next + 1) % maxEventLog
	l.n = min(l.n+1, maxEventLog)
}

// list returns up to limit entries of kind ("": all), newest first, and
// the totals by kind.
func (l *eventLog) list(kind string, limit int) ([]LogEvent, map[string]uint64, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]LogEvent, 0, min(limit, l.n))
	for i := 1; i <= l.n && len(out) < limit; i++ {
		x := l.buf[(l.next-i+maxEventLog)%maxEventLog]
		if kind == "" || x.Kind == kind {
			out = append(out, x)
		}
	}
	totals := make(map[string]uint64, len(l.totals))
	for k, v := range l.totals {
		totals[k] = v
	}
	return out, totals, l.seq
}

// RecordEvent adds e to the broker's event history (GET /api/v1/events
// and the dashboard's Refusals view). The broker's own refusals and
// denials come in through broker.SetEvents; other sources (the HTTP
// listener's refused WebSocket upgrades, for one) call it with a Kind of
// their own. Safe for concurrent use, and cheap: a repeat costs a
// comparison with the last few entries.
func (a *Admin) RecordEvent(e broker.Event) { a.events.record(e) }

// EventsFeed is the payload of FeedEvents and of GET /api/v1/events.
type EventsFeed struct {
	Time   int64             `json:"t"`
	Events []LogEvent        `json:"events"` // newest first
	Totals map[string]uint64 `json:"totals"` // by kind since start, repeats included
}

// getEvents: GET /api/v1/events[?kind=&limit=]
func (a *Admin) getEvents(w http.ResponseWriter, r *http.Request) {
	limit := maxEventLog
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxEventLog {
			writeError(w, http.StatusBadRequest, "limit: want 1 to "+strconv.Itoa(maxEventLog))
			return
		}
		limit = n
	}
	evs, totals, _ := a.events.list(r.URL.Query().Get("kind"), limit)
	writeJSON(w, http.StatusOK, EventsFeed{Time: time.Now().UnixMilli(), Events: evs, Totals: totals})
}

// publishEvents sends FeedEvents: every tick while watched, so that a
// page opened later gets the history within a tick.
func (f *feed) publishEvents(now time.Time) error {
	if f.log == nil {
		return nil
	}
	evs, totals, _ := f.log.list("", maxFeedLog)
	return f.publishJSON(FeedEvents, EventsFeed{Time: now.UnixMilli(), Events: evs, Totals: totals})
}

// hostOf is the host of a host:port address: a client that retries comes
// from a new port each time.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
