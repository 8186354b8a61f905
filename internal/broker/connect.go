package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/starling-mqtt/starling/internal/conn"
	"github.com/starling-mqtt/starling/internal/limit"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

// handler is the protocol state of one network connection; it runs on the
// connection's reader goroutine only.
type handler struct {
	b  *Broker
	c  *conn.Conn
	cl *client
	// listener is the name of the listener that accepted the connection.
	listener string

	aliasMax uint16 // topic aliases we accept
	// keepAlive is the keep alive in seconds: a uint16 beside aliasMax
	// rather than a time.Duration keeps the handler in its class.
	keepAlive   uint16
	aliases     map[uint16]string // inbound topic aliases
	expiryZero  bool              // CONNECT had session expiry 0
	discardWill bool              // normal DISCONNECT: the will is not sent
	problemInfo bool              // client accepts reason strings on acks
	version     byte              // beside the flags: the handler fits a smaller allocation class
	// resuming is set when the connection was parked waiting for a packet
	// due by deadline (keep alive): the next read keeps that deadline.
	resuming bool
	served   bool        // past the first wait after CONNECT
	info     *ClientInfo // who the client is, for the authorizer; its Remote is the client's address
	pubLimit *pubLimits  // publish rate limits; nil when off
	// cp is the CONNECT while it is being handled, for the log and event of
	// a refusal (the client ID and user name as given); nil once the
	// connection is accepted: a pointer, not two strings, keeps the
	// handler in the 256-byte class.
	cp         *packet.Connect
	authMethod string       // enhanced authentication method of CONNECT; "" for none
	reauth     *reauthState // re-authentication in progress; nil when none
	// deadline: until CONNECT is done, when it and any AUTH exchange must
	// be; then, while resuming, when the packet awaited when parked is due.
	// One field for both, in Unix nanoseconds (0: none), not a time.Time
	// (24 bytes): the handler fits a smaller allocation class.
	deadline int64
	expiry   *time.Timer // ends the connection when Identity.Expires passes; nil when none

	ls      *ListenerStats // counts the connection open until it ends; nil: none
	addrKey string         // per-address slot held; "" when none

	// attached is cl once set, for the connection's writer (OnTake).
	attached atomic.Pointer[client]
	// hs collects the full sessions the current publish reached; hold is
	// the connection's publishes waiting for room (flow.go), under heldMu.
	hs     holdSet
	heldMu sync.Mutex
	hold   *hold
}

// pubLimits are a connection's publish rate limits (either may be nil).
type pubLimits struct{ msgs, bytes *limit.TokenBucket }

// remoteAddr is the client's address: its ClientInfo's once CONNECT is
// accepted, the socket's before (a string kept per connection in the
// handler was the same as the ClientInfo's).
func (h *handler) remoteAddr() string {
	if h.info != nil {
		return h.info.Remote
	}
	if a := h.c.NetConn().RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// setDeadline keeps t (a socket deadline; zero: none) in h.deadline.
func (h *handler) setDeadline(t time.Time) {
	h.deadline = 0
	if !t.IsZero() {
		h.deadline = t.UnixNano()
	}
}

// deadlineAt is the deadline setDeadline kept.
func (h *handler) deadlineAt() time.Time {
	if h.deadline == 0 {
		return time.Time{}
	}
	return time.Unix(0, h.deadline)
}

// run reads CONNECT, attaches the session and serves packets until the
// connection ends or is parked (true).
func (h *handler) run() (parked bool) {
	connectBy := time.Now().Add(h.b.lim.ConnectTimeout) // a socket deadline: real time, whatever the broker's clock
	h.setDeadline(connectBy)
	p, _, err := h.c.ReadPacket(connectBy)
	if err != nil {
		var pe *packet.Error
		cp, isConnect := p.(*packet.Connect)
		switch {
		case isConnect && errors.As(err, &pe) && pe.Code == packet.UnsupportedProtocolVersion && cp.ProtocolName == "MQTT" && cp.ProtocolVersion > packet.V5:
			// A level newer than 5: MQTT 5.0 section 3.1.2.2 lets the
			// server answer CONNACK 0x84 (unsupported protocol version),
			// and a client newer than 5.0 was written knowing 5.0 and can
			// read its CONNACK to fall back; the 3.1.1 form (20 02 00 01)
			// is malformed to a 5.0 parser (0x01 is no CONNACK reason code
			// and the property length is missing).
			h.c.SetVersion(packet.V5)
			h.c.CloseAfter(&packet.Connack{ReasonCode: packet.UnsupportedProtocolVersion})
		case isConnect && errors.As(err, &pe) && pe.Code == packet.UnsupportedProtocolVersion:
			// [MQTT-3.1.2-2] (3.1.1) an older or mismatched level (MQIsdp
			// at 4, MQTT at 3): return code 0x01 in the 3.1.1 form,
			// which every client before 5.0 reads.
			h.c.SetVersion(packet.V311)
			h.c.CloseAfter(&packet.Connack{ReasonCode: packet.V3UnacceptableVersion})
		case isConnect && cp.ProtocolVersion == packet.V5 && pe != nil && (pe.Code == packet.MalformedPacket || pe.Code == packet.ProtocolError):
			// [MQTT-4.13.1-1] an MQTT 5 client may be told why (invalid
			// UTF-8, a bad property...); 3.x has no code for it.
			h.c.SetVersion(packet.V5)
			h.c.CloseAfter(&packet.Connack{ReasonCode: pe.Code})
		default:
			h.c.Close()
		}
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			h.b.exceeded(limConnectTimeout) // no complete CONNECT in time
		}
		h.b.log.Debug("connect failed", "remote", h.remoteAddr(), "err", err)
		return false
	}
	cp, ok := p.(*packet.Connect)
	if !ok {
		// [MQTT-3.1.0-1] the first packet must be CONNECT.
		h.b.log.Debug("first packet not CONNECT", "remote", h.remoteAddr(), "type", p.Type())
		h.c.Close()
		return false
	}
	if !h.connect(cp) {
		return false
	}
	h.cp = nil // accepted: no refusal follows, and the CONNECT is garbage
	if h.b.connLogOn() {
		// Checked first: the strings boxed for the arguments were three
		// garbage objects per connect, in a class idle records share.
		h.b.connLog(connConnected, "client connected", "client_id", h.cl.id, "remote", h.remoteAddr(), "listener", h.listener, "version", h.version,
			"clean_start", cp.CleanStart, "keep_alive", cp.KeepAlive)
	}
	return h.serveUntilEnd()
}

// serveUntilEnd serves packets; when the connection ends it detaches the
// session. It reports true, having done nothing more, when the connection
// was parked.
func (h *handler) serveUntilEnd() (parked bool) {
	reason, parked := h.serve()
	if parked {
		return true
	}
	h.cl.mu.Lock()
	if why := h.cl.closedReason(h.c); why != "" {
		reason = why // not the read error the close caused
		h.cl.closed = nil
	} else if werr := h.c.WriteErr(); werr != nil {
		reason = writeFailure(werr) // the reader saw only the closed socket
	}
	h.cl.gone = &goneInfo{reason: reason, at: h.b.now()}
	h.cl.mu.Unlock()
	h.armExpiry(time.Time{})
	h.b.detach(h)
	if h.b.connLogOn() {
		h.b.connLog(connDisconnected, "client disconnected", "client_id", h.cl.id, "remote", h.remoteAddr(), "reason", reason)
	}
	return false
}

// writeFailure names why writing to a client failed, for the disconnect
// line: a timeout means the client stopped reading.
func writeFailure(err error) string {
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return "slow reader: write timed out, the client stopped reading"
	}
	return "write failed: " + err.Error()
}

// Resume carries on with a parked connection (conn.Owner); the poller
// calls it on a new goroutine.
func (h *handler) Resume() { h.drive(h.serveUntilEnd) }

// Took is conn.Owner's: the connection's writer took n queued QoS 0
// publishes, or (0) the socket took bytes. A method rather than a closure
// per connection: one live object less for every idle one.
func (h *handler) Took(n int) {
	if cl := h.attached.Load(); cl != nil {
		h.b.tookQoS0(cl, n)
	}
}

// connLogOn reports whether connection lines are logged at all (info):
// callers check it before boxing the line's arguments.
func (b *Broker) connLogOn() bool { return b.log.Enabled(context.Background(), slog.LevelInfo) }

// The kinds of connection lines, counted apart when suppressed.
const (
	connConnected    = limit.ConnConnected
	connDisconnected = limit.ConnDisconnected
	connTakenOver    = limit.ConnTakenOver
)

// connLog writes an info line about a client connecting, leaving or
// being taken over, within limits.connection_log_lines_per_second: a
// reconnect flood must not flood the log. A line the logger would not
// write takes nothing from the budget.
func (b *Broker) connLog(kind int, msg string, args ...any) {
	if !b.connLogOn() {
		return
	}
	if b.connLogs == nil || b.connLogs.OKKind(kind) {
		b.log.Info(msg, args...)
	}
}

// refuse answers CONNECT with an error CONNACK and closes, with a line in
// the rate-limited audit trail.
func (h *handler) refuse(code packet.ReasonCode, reason string) bool {
	h.refusal(code, reason)
	h.b.auditLog(slog.LevelInfo, "connect refused", h.refusedAttrs(code, reason)...)
	return false
}

// refuseAuth is refuse for a client the Authenticator or Authorizer
// refused: they write the audit line (the built-in ones within the same
// rate limit), so the broker's is at debug level.
func (h *handler) refuseAuth(code packet.ReasonCode, reason string) bool {
	h.refusal(code, reason)
	if h.b.log.Enabled(context.Background(), slog.LevelDebug) {
		h.b.log.LogAttrs(context.Background(), slog.LevelDebug, "connect refused", h.refusedAttrs(code, reason)...)
	}
	return false
}

// refusal sends the error CONNACK and closes. v5 codes are mapped to the
// closest 3.x return code.
func (h *handler) refusal(code packet.ReasonCode, reason string) {
	h.b.emit(h.refusedEvent(code, reason))
	ack := &packet.Connack{ReasonCode: code}
	if h.version == packet.V5 {
		ack.Properties.ReasonString = reason
	} else {
		ack.ReasonCode = v3ConnackCode(code)
	}
	h.c.CloseAfter(ack)
}

func (h *handler) refusedAttrs(code packet.ReasonCode, reason string) []slog.Attr {
	id, user := h.connectNames()
	a := []slog.Attr{slog.String("client_id", id), slog.String("username", user), slog.String("remote", h.remoteAddr())}
	if h.listener != "" {
		a = append(a, slog.String("listener", h.listener))
	}
	return append(a, slog.String("code", fmt.Sprintf("0x%02x", byte(code))), slog.String("reason", reason))
}

// connectNames are the client ID and user name the CONNECT being handled
// gave.
func (h *handler) connectNames() (id, user string) {
	if h.cp == nil {
		return "", ""
	}
	return h.cp.ClientID, h.cp.Username
}

func v3ConnackCode(c packet.ReasonCode) packet.ReasonCode {
	switch c {
	case packet.UnsupportedProtocolVersion:
		return packet.V3UnacceptableVersion
	case packet.ClientIDNotValid:
		return packet.V3IdentifierRejected
	case packet.BadUsernameOrPassword:
		return packet.V3BadUsernameOrPassword
	case packet.NotAuthorized:
		return packet.V3NotAuthorized
	}
	return packet.V3ServerUnavailable
}

func (h *handler) connect(cp *packet.Connect) bool {
	b := h.b
	h.version = cp.ProtocolVersion
	h.cp = cp
	h.c.SetVersion(h.version)
	props := &cp.Properties
	v5 := h.version == packet.V5
	h.problemInfo = props.RequestProblemInfo == nil || *props.RequestProblemInfo == 1

	if w := cp.Will; w != nil {
		if err := topic.ValidateName(w.Topic); err != nil {
			return h.refuse(packet.TopicNameInvalid, "will topic: "+err.Error())
		}
		if w.QoS > b.lim.MaxQoS {
			return h.refuse(packet.QoSNotSupported, "will QoS above maximum QoS") // [MQTT-3.2.2-12]
		}
		if key := b.lim.TopicExceeded(w.Topic); key != "" {
			b.topicExceeded(key)
			return h.refuse(packet.TopicNameInvalid, "will topic over limits."+key)
		}
		if f := w.Properties.PayloadFormat; f != nil && *f == 1 && !utf8.Valid(w.Payload) {
			return h.refuse(packet.PayloadFormatInvalid, "will payload is not UTF-8")
		}
	}
	var ident Identity
	var code packet.ReasonCode
	var authData []byte
	if props.AuthMethod != "" {
		// Enhanced authentication (v5 only: 3.x has no properties).
		var ok bool
		if ident, code, authData, ok = h.enhancedAuth(cp, h.deadlineAt()); !ok {
			b.Traffic.AuthFailures[4].Add(1) // auth_exchange_failed
			return false
		}
		if code == packet.BadAuthenticationMethod {
			b.authFailed(code)
			return h.refuse(code, "authentication method not supported")
		}
		h.authMethod = props.AuthMethod
	} else {
		ident, code = h.authenticate(cp)
	}
	if code != packet.Success {
		b.authFailed(code)
		return h.refuseAuth(code, "authentication failed")
	}
	id := cp.ClientID
	assigned := false
	if id == "" {
		// [MQTT-3.1.3-6, 3.1.3-8] 3.1.1 may assign an ID only for a clean
		// session; 3.1 requires one.
		if h.version == packet.V31 || (h.version == packet.V311 && !cp.CleanStart) {
			return h.refuse(packet.ClientIDNotValid, "empty client identifier")
		}
		id, assigned = newClientID(), true
	}

	if code, why, ok := h.internalCheck(id); !ok {
		return h.refuse(code, why)
	}

	expiry := uint32(0)
	switch {
	case v5 && props.SessionExpiry != nil:
		expiry = *props.SessionExpiry
	case !v5 && !cp.CleanStart:
		expiry = session.NeverExpire
	}
	requested := expiry
	// The broker's own clients (bridges) keep what they asked for.
	if m := b.lim.MaxSessionExpiry; m > 0 && time.Duration(expiry)*time.Second > m && h.listener != internalListener {
		expiry = uint32(m / time.Second)
	}
	h.expiryZero = expiry == 0

	ka := cp.KeepAlive
	kaChanged := false
	if m := b.lim.MaxKeepAlive; m > 0 && (ka == 0 || ka > m) {
		if !v5 {
			// A 3.x client cannot be told another keep alive, and would
			// be cut while pinging on its own schedule: refuse it.
			return h.refuse(packet.ClientIDNotValid, fmt.Sprintf("keep alive %d s outside limits.max_keep_alive (1..%d)", ka, m))
		}
		ka, kaChanged = m, true
	}
	h.keepAlive = ka
	h.aliasMax = b.lim.MaxTopicAlias

	link := session.Link{Version: h.version, ReceiveMax: 65535}
	if v5 {
		if props.ReceiveMaximum != nil {
			link.ReceiveMax = *props.ReceiveMaximum
		}
		if props.MaximumPacketSize != nil {
			link.MaxPacketSize = *props.MaximumPacketSize
		}
		if props.TopicAliasMaximum != nil {
			link.TopicAliasMax = min(*props.TopicAliasMaximum, b.lim.MaxTopicAlias)
		}
	}

	ack := func(present bool) *packet.Connack {
		a := &packet.Connack{SessionPresent: present && h.version != packet.V31}
		if !v5 {
			return a
		}
		p := &a.Properties
		if rm := b.lim.MaxInflight; rm != 65535 {
			p.ReceiveMaximum = &rm
		}
		if b.lim.MaxQoS < 2 {
			q := b.lim.MaxQoS
			p.MaximumQoS = &q
		}
		mps := b.lim.MaxPacketSize
		p.MaximumPacketSize = &mps
		if h.aliasMax > 0 {
			am := h.aliasMax
			p.TopicAliasMaximum = &am
		}
		if assigned {
			p.AssignedClientID = id // [MQTT-3.2.2-16]
		}
		if kaChanged {
			p.ServerKeepAlive = &ka // [MQTT-3.2.2-21]
		}
		if expiry != requested {
			e := expiry
			p.SessionExpiry = &e
		}
		if h.authMethod != "" {
			// [MQTT-4.12.0-5] the same method as CONNECT.
			p.AuthMethod, p.AuthData = h.authMethod, authData
		}
		if r := props.RequestResponseInfo; r != nil && *r == 1 {
			p.ResponseInfo = "response/" + id + "/"
		}
		return a
	}
	h.info = &ClientInfo{ClientID: id, Identity: ident, Remote: h.remoteAddr()} // the socket's, as info is nil
	if msgs, bytes := b.lim.Config.NewPublishLimits(); msgs != nil || bytes != nil {
		h.pubLimit = &pubLimits{msgs: msgs, bytes: bytes}
	}
	if w := cp.Will; w != nil && !b.allow(h.info, ActPublish, w.Topic) {
		b.Traffic.DeniedPublish.Add(1)
		b.emit(Event{Kind: EventPublishDenied, ClientID: id, Username: ident.Username, Remote: h.remoteAddr(), Listener: h.listener, Topic: w.Topic, Reason: "will topic not authorized"})
		return h.refuseAuth(packet.NotAuthorized, "will topic not authorized")
	}
	if bp := b.backplane; bp != nil {
		// Take the session from whichever node holds it before attaching.
		snap, err := bp.Claim(id, cp.CleanStart)
		if errors.Is(err, ErrNotReady) {
			return h.refuse(packet.ServerUnavailable, "cluster node not ready; retry")
		}
		if errors.Is(err, ErrSessionMoving) {
			// Its node kept the session: better a retry than a
			// connect without it.
			b.log.Warn("cluster session hand-over failed; refusing the connect", "client_id", id, "err", err)
			return h.refuse(packet.ServerUnavailable, "session is moving between nodes; retry")
		}
		if err != nil {
			b.log.Warn("cluster session claim failed; continuing with this node's state", "client_id", id, "err", err)
		}
		if snap != nil {
			b.Adopt(snap)
		}
		if sm, ok := bp.(StayMarker); ok && expiry > 0 && (cp.CleanStart || !b.HasSession(id)) {
			// Not past a refusal: a takeover replays from the marker,
			// which would drop what a surviving session here had queued.
			if code, reason := b.attachRefused(id); code != packet.Success {
				return h.refuse(code, reason)
			}
			sm.StartStay(id)
		}
	}
	code, reason := b.attach(h, id, cp, expiry, link, ack)
	if code != packet.Success {
		return h.refuse(code, reason)
	}
	h.armExpiry(ident.Expires)
	return true
}

// willState is a will message waiting for its connection to end (and then
// for its delay).
type willState struct {
	msg   *session.Message
	delay time.Duration
	// held: restored in a cluster, waiting for ReleaseWills (no deadline);
	// heldEnded: and its session ended meanwhile. Guarded by cl.mu.
	held, heldEnded bool
}

func newWill(cp *packet.Connect, clientID string, now time.Time) *willState {
	w := cp.Will
	if w == nil {
		return nil
	}
	m := &session.Message{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain, Publisher: clientID}
	m.Props = messageProps(&w.Properties)
	ws := &willState{msg: m}
	if d := w.Properties.WillDelay; d != nil {
		ws.delay = time.Duration(*d) * time.Second
	}
	if e := w.Properties.MessageExpiry; e != nil {
		// Expiry counts from when the will is published; set then.
		ws.msg.Props.MessageExpiry = e
	}
	return ws
}

// messageProps keeps the properties that travel with a message to its
// subscribers [MQTT-3.3.2-4, 3.3.2-15, 3.3.2-16, 3.3.2-17, 3.3.2-18, 3.3.2-20]; routing-only ones are dropped.
func messageProps(p *packet.Properties) packet.Properties {
	return packet.Properties{
		PayloadFormat:   p.PayloadFormat,
		ContentType:     p.ContentType,
		ResponseTopic:   p.ResponseTopic,
		CorrelationData: p.CorrelationData,
		UserProperties:  p.UserProperties,
	}
}
