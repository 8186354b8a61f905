package admin

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/topic"
)

// errDisabled is the answer of the API without a Checker.
const errDisabled = "admin API disabled: configure admin credentials"

// protect lets through requests with admin credentials, and only
// same-origin ones from browsers (a page elsewhere cannot make a logged-in
// browser kick or publish).
func (a *Admin) protect(h http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused: the API changes nothing for pages of another site")
	}))
	return cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.opts.Checker == nil {
			writeError(w, http.StatusForbidden, errDisabled)
			return
		}
		user, pass, ok := r.BasicAuth()
		if !ok || !a.opts.Checker.CheckAdmin(user, pass) {
			// A script that sets X-Requested-With handles the 401 itself
			// (the dashboard); a challenge would make the browser ask for
			// a password over it, or hold the request in a headless one.
			if r.Header.Get("X-Requested-With") == "" {
				w.Header().Set("WWW-Authenticate", `Basic realm="starling admin", charset="UTF-8"`)
			}
			writeError(w, http.StatusUnauthorized, "admin credentials required")
			return
		}
		h.ServeHTTP(w, r)
	}))
}

func (a *Admin) api() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/clients", a.listClients)
	mux.HandleFunc("GET /api/v1/clients/{id}", a.getClient)
	mux.HandleFunc("POST /api/v1/clients/{id}/kick", a.kick)
	mux.HandleFunc("DELETE /api/v1/clients/{id}", a.deleteSession)
	mux.HandleFunc("GET /api/v1/retained", a.listRetained)
	mux.HandleFunc("DELETE /api/v1/retained/{topic...}", a.deleteRetained)
	mux.HandleFunc("POST /api/v1/publish", a.publish)
	mux.HandleFunc("GET /api/v1/stats", a.stats)
	mux.HandleFunc("GET /api/v1/history", a.getHistory)
	mux.HandleFunc("GET /api/v1/events", a.getEvents)
	mux.HandleFunc("GET /api/v1/alerts", a.getAlerts)
	mux.HandleFunc("POST /api/v1/alerts/ack", a.ackAlerts)
	mux.HandleFunc("GET /api/v1/cluster", a.cluster)
	mux.HandleFunc("GET /api/v1/bridges", a.bridges)
	mux.HandleFunc("GET /api/v1/receivers", a.receivers)
	mux.HandleFunc("POST /api/v1/subscribers", a.subscribers)
	mux.HandleFunc("GET /api/v1/shared", a.shared)
	mux.HandleFunc("GET /api/v1/trace", a.getTrace)
	mux.HandleFunc("POST /api/v1/trace", a.startTrace)
	mux.HandleFunc("DELETE /api/v1/trace", a.stopTrace)
	mux.HandleFunc("GET /api/v1/log-level", a.getLogLevel)
	mux.HandleFunc("PUT /api/v1/log-level", a.setLogLevel)
	// Anything else: 405 with Allow when the path is served with other
	// methods, else 404; both in JSON like every other answer.
	outer := http.NewServeMux()
	outer.Handle("/api/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			r2 := r.Clone(r.Context())
			r2.Method = m
			if _, pattern := mux.Handler(r2); pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, "method not allowed: use "+strings.Join(allow, " or "))
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint")
	}))
	return outer
}

// Client is a session as the API shows it.
type Client struct {
	ClientID        string         `json:"client_id"`
	Connected       bool           `json:"connected"`
	ProtocolVersion byte           `json:"protocol_version"` // 3 (3.1), 4 (3.1.1), 5
	Username        string         `json:"username,omitempty"`
	Remote          string         `json:"remote,omitempty"`
	SessionExpiry   uint32         `json:"session_expiry_interval"` // seconds
	Persistent      bool           `json:"persistent"`
	Inflight        int            `json:"inflight"`
	Window          int            `json:"inflight_window"`           // the smaller of its Receive Maximum and limits.max_inflight
	ReceiveMax      uint16         `json:"receive_maximum,omitempty"` // of the last connection; 65535 when it gave none
	Queued          int            `json:"queued"`
	Subscriptions   []Subscription `json:"subscriptions"`
	Dropped         Dropped        `json:"dropped"`
	KeepAlive       uint16         `json:"keep_alive"` // seconds, as granted; 0: none
	TLS             bool           `json:"tls"`
	TLSVersion      string         `json:"tls_version,omitempty"` // "TLS 1.3"
	ClientCert      string         `json:"client_cert,omitempty"` // subject CN of a verified client certificate
	Flow            Flow           `json:"flow"`
	Listener        string         `json:"listener,omitempty"`          // of the last connection
	ConnectedAt     *time.Time     `json:"connected_at,omitempty"`      // of the last connection
	DisconnectedAt  *time.Time     `json:"disconnected_at,omitempty"`   // when the last connection ended
	DisconnectWhy   string         `json:"disconnect_reason,omitempty"` // why, as the log line says it
	Will            *Will          `json:"will,omitempty"`              // pending will of the current or last connection
}

// Will is a session's will message as the API shows it (no payload).
type Will struct {
	Topic        string  `json:"topic"`
	QoS          byte    `json:"qos"`
	Retain       bool    `json:"retain"`
	DelaySeconds float64 `json:"delay_seconds"`
	PayloadBytes int     `json:"payload_bytes"`
}

// Flow is what flow control did for and to a client (docs/flow-control.md).
type Flow struct {
	HeldSeconds   float64 `json:"held_seconds"`   // time publishers spent held back by it
	PolicyActions uint64  `json:"policy_actions"` // slow-consumer policy actions against it
	Dropped       uint64  `json:"dropped"`        // dropped by a drop policy or past the hard limit
	Conflated     uint64  `json:"conflated"`      // replaced by a newer message of their topic
	Shedding      bool    `json:"shedding"`       // a drop policy is in force now
}

// Subscription is one subscription of a session.
type Subscription struct {
	Filter         string `json:"filter"` // as subscribed, $share/... included
	QoS            byte   `json:"qos"`
	SubscriptionID int    `json:"subscription_id,omitempty"`
	LatestValue    bool   `json:"latest_value,omitempty"` // latest-value delivery
	Sample         string `json:"sample,omitempty"`       // sampled delivery interval
	// MQTT 5 subscription options.
	NoLocal           bool `json:"no_local,omitempty"`
	RetainAsPublished bool `json:"retain_as_published,omitempty"`
	RetainHandling    byte `json:"retain_handling,omitempty"`
}

// Dropped counts a session's dropped deliveries by reason.
type Dropped struct {
	QueueFull uint64 `json:"queue_full"`
	Expired   uint64 `json:"expired"`
	TooLarge  uint64 `json:"too_large"`
}

func droppedOf(s broker.ClientSummary) Dropped {
	return Dropped{QueueFull: s.DroppedQueue, Expired: s.DroppedExpired, TooLarge: s.DroppedLarge}
}

func flowOf(f broker.ClientFlow) Flow {
	return Flow{HeldSeconds: f.HeldFor.Seconds(), PolicyActions: f.PolicyActions, Dropped: f.Dropped,
		Conflated: f.Conflated, Shedding: f.Shedding}
}

func toClient(s broker.ClientSummary) Client {
	c := Client{ClientID: s.ClientID, Connected: s.Connected, ProtocolVersion: s.Version, Username: s.Username,
		Remote: s.Remote, SessionExpiry: s.ExpiryInterval, Persistent: s.Persistent, Inflight: s.Inflight,
		Queued: s.Queued, Subscriptions: make([]Subscription, 0, len(s.Subscriptions)),
		Dropped: droppedOf(s), KeepAlive: s.KeepAlive, TLS: s.TLS, TLSVersion: s.TLSVersion, ClientCert: s.ClientCert,
		Flow: flowOf(s.Flow), Window: s.Window, ReceiveMax: s.ReceiveMax}
	if !s.ConnectedAt.IsZero() {
		t := s.ConnectedAt.UTC()
		c.ConnectedAt = &t
	}
	if !s.DisconnectedAt.IsZero() {
		t := s.DisconnectedAt.UTC()
		c.DisconnectedAt, c.DisconnectWhy = &t, s.DisconnectReason
	}
	c.Listener = s.Listener
	if w := s.Will; w != nil {
		c.Will = &Will{Topic: w.Topic, QoS: w.QoS, Retain: w.Retain, DelaySeconds: w.Delay.Seconds(), PayloadBytes: w.PayloadSize}
	}
	for _, sub := range s.Subscriptions {
		cs := Subscription{Filter: sub.Filter, QoS: sub.QoS, SubscriptionID: sub.ID, LatestValue: sub.Latest}
		if sub.Sample > 0 {
			cs.Sample = sub.Sample.String()
		}
		cs.NoLocal, cs.RetainAsPublished, cs.RetainHandling = sub.NoLocal, sub.RetainAsPublished, sub.RetainHandling
		c.Subscriptions = append(c.Subscriptions, cs)
	}
	return c
}

// getClient: GET /api/v1/clients/{id}
func (a *Admin) getClient(w http.ResponseWriter, r *http.Request) {
	s, ok := a.b.Client(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "no such client")
		return
	}
	writeJSON(w, http.StatusOK, toClient(s))
}

// kick: POST /api/v1/clients/{id}/kick
func (a *Admin) kick(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := a.b.Client(id); !ok {
		writeError(w, http.StatusNotFound, "no such client")
		return
	}
	kicked := a.b.Kick(id)
	if kicked {
		a.log.Info("client kicked by admin", "client_id", id, "remote", r.RemoteAddr)
	}
	writeJSON(w, http.StatusOK, map[string]any{"client_id": id, "kicked": kicked})
}

// Retained is a retained message as the API shows it: the payload as text
// when it is valid UTF-8, else in base64.
type Retained struct {
	Topic         string     `json:"topic"`
	Payload       *string    `json:"payload,omitempty"`
	PayloadBase64 string     `json:"payload_base64,omitempty"`
	QoS           byte       `json:"qos"`
	Expires       *time.Time `json:"expires,omitempty"`
}

// Retained listing limits.
const (
	defaultRetainedLimit = 100
	maxRetainedLimit     = 10000
)

// listRetained: GET /api/v1/retained[?filter=#&limit=100]
func (a *Admin) listRetained(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	filter := q.Get("filter")
	if filter == "" {
		filter = "#"
	}
	limit := defaultRetainedLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxRetainedLimit {
			writeError(w, http.StatusBadRequest, "limit: want 1 to "+strconv.Itoa(maxRetainedLimit))
			return
		}
		limit = n
	}
	ms, err := a.b.RetainedMatching(filter, limit+1)
	if err != nil {
		writeError(w, http.StatusBadRequest, fieldError("filter", err))
		return
	}
	truncated := len(ms) > limit
	if truncated {
		ms = ms[:limit]
	}
	out := make([]Retained, 0, len(ms))
	for _, m := range ms {
		rm := Retained{Topic: m.Topic, QoS: m.QoS}
		if utf8.Valid(m.Payload) {
			p := string(m.Payload)
			rm.Payload = &p
		} else {
			rm.PayloadBase64 = base64.StdEncoding.EncodeToString(m.Payload)
		}
		if !m.Expiry.IsZero() {
			e := m.Expiry.UTC()
			rm.Expires = &e
		}
		out = append(out, rm)
	}
	writeJSON(w, http.StatusOK, map[string]any{"retained": out, "truncated": truncated})
}

// deleteRetained: DELETE /api/v1/retained/{topic...} publishes an empty
// retained message at QoS 1, so the deletion is synced to the store before
// the answer, and subscribers see it as MQTT clients would.
func (a *Admin) deleteRetained(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("topic")
	if err := topic.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, fieldError("topic", err))
		return
	}
	ms, err := a.b.RetainedMatching(name, 1)
	if err != nil {
		writeError(w, http.StatusBadRequest, fieldError("topic", err))
		return
	}
	if len(ms) == 0 {
		writeError(w, http.StatusNotFound, "no retained message on this topic")
		return
	}
	if _, err := a.b.Publish(name, nil, 1, true); err != nil {
		writeError(w, http.StatusInternalServerError, "delete: "+err.Error())
		return
	}
	a.log.Info("retained message deleted by admin", "topic", name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"deleted": name})
}

// PublishRequest is the body of POST /api/v1/publish. Payload is text;
// PayloadBase64, if set, is used instead for binary payloads. The other
// fields are the MQTT 5 properties MQTT 5 subscribers receive.
type PublishRequest struct {
	Topic         string `json:"topic"`
	Payload       string `json:"payload"`
	PayloadBase64 string `json:"payload_base64"`
	QoS           byte   `json:"qos"`
	Retain        bool   `json:"retain"`

	ContentType           string         `json:"content_type"`
	ResponseTopic         string         `json:"response_topic"`
	CorrelationData       string         `json:"correlation_data"`        // text
	CorrelationDataBase64 string         `json:"correlation_data_base64"` // or binary
	UserProperties        []UserProperty `json:"user_properties"`
	PayloadFormat         byte           `json:"payload_format"`          // 1: UTF-8 text
	MessageExpiry         uint32         `json:"message_expiry_interval"` // seconds, 0 for none
}

// UserProperty is an MQTT 5 user property.
type UserProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// decodeJSON reads r's body, at most limit bytes, as one JSON value into
// v, refusing unknown fields; an empty body leaves v as it is when empty
// is true. On failure it answers 413 (too large) or 400 and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any, empty bool) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil, empty && errors.Is(err, io.EOF):
		return true
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(limit, 10)+" bytes")
	default:
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
	}
	return false
}

// publish: POST /api/v1/publish
func (a *Admin) publish(w http.ResponseWriter, r *http.Request) {
	var req PublishRequest
	if !decodeJSON(w, r, a.opts.MaxBodyBytes, &req, false) {
		return
	}
	if err := topic.ValidateName(req.Topic); err != nil {
		writeError(w, http.StatusBadRequest, fieldError("topic", err))
		return
	}
	if req.QoS > 2 {
		writeError(w, http.StatusBadRequest, "qos: want 0, 1 or 2")
		return
	}
	payload := []byte(req.Payload)
	if req.PayloadBase64 != "" {
		if req.Payload != "" {
			writeError(w, http.StatusBadRequest, "payload and payload_base64 both set")
			return
		}
		var err error
		if payload, err = base64.StdEncoding.DecodeString(req.PayloadBase64); err != nil {
			writeError(w, http.StatusBadRequest, "payload_base64: "+err.Error())
			return
		}
	}
	m := broker.Message{Topic: req.Topic, Payload: payload, QoS: req.QoS, Retain: req.Retain, ContentType: req.ContentType,
		ResponseTopic: req.ResponseTopic, CorrelationData: []byte(req.CorrelationData), MessageExpiry: req.MessageExpiry}
	if req.CorrelationDataBase64 != "" {
		if req.CorrelationData != "" {
			writeError(w, http.StatusBadRequest, "correlation_data and correlation_data_base64 both set")
			return
		}
		var err error
		if m.CorrelationData, err = base64.StdEncoding.DecodeString(req.CorrelationDataBase64); err != nil {
			writeError(w, http.StatusBadRequest, "correlation_data_base64: "+err.Error())
			return
		}
	}
	if len(m.CorrelationData) == 0 {
		m.CorrelationData = nil
	}
	if req.ResponseTopic != "" {
		if err := topic.ValidateName(req.ResponseTopic); err != nil {
			writeError(w, http.StatusBadRequest, fieldError("response_topic", err))
			return
		}
	}
	switch req.PayloadFormat {
	case 0:
	case 1:
		if !utf8.Valid(payload) {
			writeError(w, http.StatusBadRequest, "payload_format 1 but the payload is not UTF-8")
			return
		}
		m.PayloadUTF8 = true
	default:
		writeError(w, http.StatusBadRequest, "payload_format: want 0 or 1")
		return
	}
	for _, u := range req.UserProperties {
		m.UserProperties = append(m.UserProperties, packet.UserProperty{Key: u.Key, Value: u.Value})
	}
	n, err := a.b.PublishMessage(m)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "publish: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"delivered": n})
}

// Receiver is a subscription that matches a topic, for
// GET /api/v1/receivers.
type Receiver struct {
	ClientID  string `json:"client_id"`
	Filter    string `json:"filter"`
	Group     string `json:"share_group,omitempty"`
	QoS       byte   `json:"qos"`
	NoLocal   bool   `json:"no_local,omitempty"`
	Connected bool   `json:"connected"`
	Allowed   bool   `json:"allowed"` // the ACL lets the client read the topic
}

// receivers: GET /api/v1/receivers?topic=X, "who would receive X?": every
// matching subscription; a $share group's message goes to one member.
func (a *Admin) receivers(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("topic")
	rs, err := a.b.Receivers(name)
	if err != nil {
		writeError(w, http.StatusBadRequest, fieldError("topic", err))
		return
	}
	out := make([]Receiver, 0, len(rs))
	sessions := map[string]bool{}
	groups := map[string]bool{}
	for _, x := range rs {
		out = append(out, Receiver{ClientID: x.ClientID, Filter: x.Filter, Group: x.Group, QoS: x.QoS, NoLocal: x.NoLocal,
			Connected: x.Connected, Allowed: x.Allowed})
		if !x.Allowed {
			continue
		}
		if x.Group != "" {
			groups[x.Group+"\x00"+x.Filter] = true
		} else {
			sessions[x.ClientID] = true
		}
	}
	// A client in a plain subscription and a group may get two copies;
	// the count is of deliveries the broker would make.
	writeJSON(w, http.StatusOK, map[string]any{"topic": name, "receivers": out, "deliveries": len(sessions) + len(groups)})
}

// maxCountTopics bounds the topics of one POST /api/v1/subscribers: the
// dashboard's topic tree holds at most 2000.
const maxCountTopics = 2000

// SubscribersRequest is the body of POST /api/v1/subscribers: topic names,
// and a client whose subscriptions are not counted (the asking dashboard's
// own connection).
type SubscribersRequest struct {
	Topics []string `json:"topics"`
	Except string   `json:"except_client"`
}

// subscribers: POST /api/v1/subscribers, for each topic name the number
// of subscriptions whose filter matches it, read from the subscription
// index. Invalid names are left out of the answer. It changes nothing; it
// is a POST because the list of topics can be long.
func (a *Admin) subscribers(w http.ResponseWriter, r *http.Request) {
	var req SubscribersRequest
	if !decodeJSON(w, r, a.opts.MaxBodyBytes, &req, false) {
		return
	}
	if len(req.Topics) > maxCountTopics {
		writeError(w, http.StatusBadRequest, "at most "+strconv.Itoa(maxCountTopics)+" topics")
		return
	}
	out := make(map[string]int, len(req.Topics))
	for _, name := range req.Topics {
		if topic.ValidateName(name) != nil {
			continue
		}
		out[name] = a.b.SubscriptionCount(name, req.Except)
	}
	writeJSON(w, http.StatusOK, map[string]any{"subscribers": out})
}

// shared: GET /api/v1/shared, the $share groups and their members.
func (a *Admin) shared(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"groups": shareGroups(a.b.Clients())})
}

// TraceRequest is the body of POST /api/v1/trace: one of ClientID or
// Topic (a filter), and the events per second to keep.
type TraceRequest struct {
	ClientID string `json:"client_id"`
	Topic    string `json:"topic"`
	Rate     int    `json:"rate"`
}

// maxTraceRate bounds the events per second a trace keeps.
const maxTraceRate = 200

// startTrace: POST /api/v1/trace starts tracing one client's packets or
// one filter's PUBLISHes, replacing any trace. The events go to FeedTrace;
// the trace stops by itself at the first feed tick nobody receives it.
func (a *Admin) startTrace(w http.ResponseWriter, r *http.Request) {
	var req TraceRequest
	if !decodeJSON(w, r, 4096, &req, false) {
		return
	}
	if (req.ClientID == "") == (req.Topic == "") {
		writeError(w, http.StatusBadRequest, "set one of client_id and topic")
		return
	}
	if req.Topic != "" {
		if err := topic.ValidateFilter(req.Topic); err != nil {
			writeError(w, http.StatusBadRequest, fieldError("topic", err))
			return
		}
	}
	if req.Rate < 0 || req.Rate > maxTraceRate {
		writeError(w, http.StatusBadRequest, "rate: want 1 to "+strconv.Itoa(maxTraceRate)+" (0: default 50)")
		return
	}
	tr := &broker.Trace{ClientID: req.ClientID, Filter: req.Topic, Rate: req.Rate}
	a.b.SetTrace(tr)
	a.log.Info("trace started by admin", "client_id", req.ClientID, "topic", req.Topic, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, traceTarget(tr))
}

// getTrace: GET /api/v1/trace
func (a *Admin) getTrace(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, traceTarget(a.b.CurrentTrace()))
}

// stopTrace: DELETE /api/v1/trace
func (a *Admin) stopTrace(w http.ResponseWriter, r *http.Request) {
	a.b.SetTrace(nil)
	writeJSON(w, http.StatusOK, traceTarget(nil))
}

// stats: GET /api/v1/stats, the counters the dashboard overview shows.
func (a *Admin) stats(w http.ResponseWriter, r *http.Request) {
	c := a.src.Counters()
	writeJSON(w, http.StatusOK, map[string]any{
		"version":           a.opts.Version,
		"uptime_seconds":    int64(time.Since(a.start) / time.Second),
		"clients_connected": c.Connected,
		"sessions":          c.Sessions,
		"connections_total": c.ConnectionsTotal,
		"messages_received": c.MessagesIn,
		"messages_sent":     c.MessagesOut,
		"messages_dropped":  c.Dropped,
		"subscriptions":     c.Subscriptions,
		"retained":          clientRetained(a.b, c.Retained),
	})
}

// getLogLevel: GET /api/v1/log-level
func (a *Admin) getLogLevel(w http.ResponseWriter, r *http.Request) {
	if a.opts.LogLevel == nil {
		writeError(w, http.StatusNotImplemented, "log level not changeable: the logger was not built with a level variable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"level": levelName(a.opts.LogLevel.Level())})
}

// setLogLevel: PUT /api/v1/log-level with {"level": "debug"}; takes
// effect at once for every log line after it.
func (a *Admin) setLogLevel(w http.ResponseWriter, r *http.Request) {
	if a.opts.LogLevel == nil {
		writeError(w, http.StatusNotImplemented, "log level not changeable: the logger was not built with a level variable")
		return
	}
	var req struct {
		Level string `json:"level"`
	}
	if !decodeJSON(w, r, 4096, &req, false) {
		return
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(req.Level)); err != nil || req.Level == "" {
		writeError(w, http.StatusBadRequest, "level: want debug, info, warn or error")
		return
	}
	old := a.opts.LogLevel.Level()
	a.opts.LogLevel.Set(lv)
	// Logged at the higher of both levels, so the change is seen either way.
	a.log.Log(r.Context(), max(old, lv), "log level changed by admin", "from", levelName(old), "to", levelName(lv), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"level": levelName(lv)})
}

func levelName(l slog.Level) string { return strings.ToLower(l.String()) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// fieldError names the request field a topic error is about; the topic
// package's errors begin "topic: " already, which is not repeated.
func fieldError(field string, err error) string {
	return field + ": " + strings.TrimPrefix(err.Error(), "topic: ")
}

// constantTimeEqual compares secrets without leaking where they differ; for
// Checkers built from a single configured user (StaticChecker).
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// StaticChecker accepts one user name and password; for tests and for
// embedders without a password file. The security package's Checker is
// the one for production.
type StaticChecker struct{ User, Password string }

// CheckAdmin implements Checker.
func (s StaticChecker) CheckAdmin(user, pass string) bool {
	u, p := constantTimeEqual(user, s.User), constantTimeEqual(pass, s.Password)
	return u && p && s.User != ""
}

// cluster: GET /api/v1/cluster
func (a *Admin) cluster(w http.ResponseWriter, r *http.Request) {
	if a.opts.Cluster == nil {
		writeJSON(w, http.StatusOK, map[string]any{"enabled": false})
		return
	}
	st := a.opts.Cluster()
	if st == nil {
		writeError(w, http.StatusServiceUnavailable, "cluster not started")
		return
	}
	out := map[string]any{"enabled": true, "name": st.Name, "node": st.Node, "ready": st.Ready,
		"peers": st.Peers, "down": st.Down, "connected_nodes": len(st.Peers) + 1, "expected_nodes": st.Expected}
	if a.opts.ClusterOwners != nil {
		out["sessions_by_node"] = a.opts.ClusterOwners()
	}
	a.feed.mu.Lock()
	out["events"] = append([]ClusterEvent{}, a.feed.clusterEvents...)
	a.feed.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// bridges lists the bridges to other brokers and their state.
func (a *Admin) bridges(w http.ResponseWriter, r *http.Request) {
	if a.opts.Bridges == nil {
		writeJSON(w, http.StatusOK, []any{})
		return
	}
	writeJSON(w, http.StatusOK, a.opts.Bridges())
}
