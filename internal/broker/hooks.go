package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// ConnectInfo is what an Authenticator sees of a connecting client.
type ConnectInfo struct {
	ClientID    string
	Username    string
	HasUsername bool
	Password    []byte
	HasPassword bool
	Version     byte
	Remote      net.Addr             // real client address (PROXY protocol / trusted X-Forwarded-For applied)
	TLS         *tls.ConnectionState // nil on plain connections; PeerCertificates holds a verified client certificate
	// Listener names the listener the connection came in on (tcp, mqtts,
	// http, https, listen_any), as given to HandleConnOn; "" from
	// HandleConn.
	Listener string
	// Token is a bearer token that came with the WebSocket upgrade request
	// (an access_token query parameter or a cookie, when configured), set
	// only when CONNECT has no password.
	Token []byte
	// Origin and Path are the Origin header and the path of the WebSocket
	// upgrade request ("" on other transports), for log lines.
	Origin, Path string
}

// Identity is who a client is once authenticated.
type Identity struct {
	Username  string // from CONNECT or mapped from a client certificate; "" for anonymous
	Anonymous bool
	Superuser bool // bypasses the Authorizer
	// Credential is the Authenticator's own record of what it checked
	// (nil: nothing to recheck), given back to a Revoker's StillValid.
	Credential any
	// Expires, when not zero, ends the client's authority: the broker
	// disconnects it then (v5: DISCONNECT 0xA0, maximum connect time)
	// unless an MQTT 5 re-authentication moves it. Set from a token's exp.
	Expires time.Time
	// Perms, when not nil, limits what the client may do whatever the
	// Authorizer says (topic lists carried by a token), superusers too.
	Perms Permissions
}

// Revoker is an Authenticator that can tell whether a connected client's
// identity still holds after its rules changed (a user deleted, a
// password changed, a certificate authority no longer trusted); see
// Broker.RevokeInvalid. StillValid must not block for long: it is called
// once per connected client.
type Revoker interface {
	StillValid(c *ClientInfo) bool
}

// Permissions are one client's own limits, checked before the Authorizer;
// both must allow. Allow is on the hot path like Authorizer.Allow.
type Permissions interface {
	Allow(c *ClientInfo, act Action, topic string) bool
}

// Authenticator decides who may connect. It returns the client's identity,
// or a reason code to refuse with (0x86 bad user name or password, 0x87 not
// authorized, 0x8C bad authentication method, 0x89 server busy...).
// Implementations must be safe for concurrent use and bound their own CPU
// use (a CONNECT storm must not exhaust the machine).
type Authenticator interface {
	Authenticate(ctx context.Context, c *ConnectInfo) (Identity, packet.ReasonCode, error)
}

// EnhancedAuthenticator is an Authenticator that also offers MQTT 5
// enhanced authentication (MQTT 5.0 section 4.12): a CONNECT carrying an
// Authentication Method in AuthMethods starts an exchange of AUTH packets
// instead of the user name and password check. Any other method is refused
// with CONNACK 0x8C (bad authentication method). The whole exchange must
// finish within the connect timeout (ctx carries that deadline).
type EnhancedAuthenticator interface {
	Authenticator
	// AuthMethods lists the methods offered now (e.g. "SCRAM-SHA-256").
	AuthMethods() []string
	// StartAuth begins an exchange with the Authentication Data of the
	// CONNECT (or of an AUTH 0x19 re-authentication).
	StartAuth(ctx context.Context, c *ConnectInfo, method string, data []byte) (AuthStep, error)
}

// AuthStep is the server's answer to one client message of an enhanced
// authentication exchange.
//
// With Next set, the exchange continues: Data goes to the client in AUTH
// 0x18 (continue authentication) and Next is called with the
// Authentication Data of the client's AUTH 0x18 reply. With Next nil, it is
// over: Code is Success (the client is Identity; Data goes to it in the
// CONNACK, or the AUTH 0x00 ending a re-authentication) or the reason code
// to refuse with (0x86, 0x87...). An error is logged and refuses the client
// with Code, or 0x88 (server unavailable) when Code is Success.
type AuthStep struct {
	Data     []byte
	Next     func(ctx context.Context, data []byte) (AuthStep, error)
	Identity Identity
	Code     packet.ReasonCode
}

// Action is what a client asks to do with a topic.
type Action uint8

const (
	ActPublish   Action = iota // publish to a topic name (also wills)
	ActSubscribe               // subscribe with a topic filter
	ActRead                    // receive a message on a topic name (also retained)
)

// ClientInfo is what an Authorizer sees of a connected client.
type ClientInfo struct {
	ClientID string
	Identity
	Remote string
}

// Authorizer decides what a connected client may do. Allow is called on the
// hot path (ActRead for every delivery), so it must be fast; a reload must
// take effect for existing subscriptions because reads are checked per
// message.
type Authorizer interface {
	Allow(c *ClientInfo, act Action, topic string) bool
}

// SetAuth installs the authenticator and authorizer; nil means anonymous
// access and everything allowed. Call before serving.
func (b *Broker) SetAuth(a Authenticator, z Authorizer) {
	b.authn, b.authz = a, z
}

// tlsState finds the TLS state of a connection, looking through wrappers
// that expose the connection they wrap.
func tlsState(nc net.Conn) *tls.ConnectionState {
	for i := 0; nc != nil && i < 8; i++ {
		if t, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
			st := t.ConnectionState()
			return &st
		}
		u, ok := nc.(interface{ Unwrap() net.Conn })
		if !ok {
			u2, ok2 := nc.(interface{ NetConn() net.Conn })
			if !ok2 {
				return nil
			}
			nc = u2.NetConn()
			continue
		}
		nc = u.Unwrap()
	}
	return nil
}

// authenticate runs the authenticator for a CONNECT; without one every
// client is let in under the user name it gave.
func (h *handler) authenticate(cp *packet.Connect) (Identity, packet.ReasonCode) {
	id := Identity{Username: cp.Username, Anonymous: !cp.HasUsername}
	if h.listener == internalListener {
		return Identity{Username: cp.ClientID, Superuser: true}, packet.Success
	}
	if h.b.authn == nil {
		return id, packet.Success
	}
	nc := h.c.NetConn()
	ci := &ConnectInfo{ClientID: cp.ClientID, Username: cp.Username, HasUsername: cp.HasUsername,
		Password: cp.Password, HasPassword: cp.HasPassword, Version: cp.ProtocolVersion,
		Remote: nc.RemoteAddr(), TLS: tlsState(nc), Listener: h.listener}
	if !cp.HasPassword {
		ci.Token = httpToken(nc)
	}
	ci.Origin, ci.Path = httpRequestInfo(nc)
	ctx := newAuthCtx(h.b.lim.ConnectTimeout)
	defer ctx.cancel()
	id, code, err := h.b.authn.Authenticate(ctx, ci)
	if err != nil {
		h.b.auditLog(slog.LevelWarn, "authentication error", slog.String("client_id", cp.ClientID), slog.String("remote", h.remoteAddr()), slog.Any("err", err))
		if code == packet.Success {
			code = packet.ServerUnavailable
		}
	}
	return id, code
}

// maxAuthRounds bounds the AUTH packets of one enhanced authentication
// exchange (SCRAM needs one).
const maxAuthRounds = 8

// enhancedAuth runs an enhanced authentication exchange for a v5 CONNECT
// with an Authentication Method, until deadline. It returns the client's
// identity, the reason code and the data for the CONNACK; ok is false when
// the connection has already been closed (read failure or protocol error).
func (h *handler) enhancedAuth(cp *packet.Connect, deadline time.Time) (id Identity, code packet.ReasonCode, data []byte, ok bool) {
	method := cp.Properties.AuthMethod
	ea, _ := h.b.authn.(EnhancedAuthenticator)
	if ea == nil || !slices.Contains(ea.AuthMethods(), method) {
		return id, packet.BadAuthenticationMethod, nil, true // [MQTT-4.12.0-1]
	}
	nc := h.c.NetConn()
	ci := &ConnectInfo{ClientID: cp.ClientID, Username: cp.Username, HasUsername: cp.HasUsername,
		Password: cp.Password, HasPassword: cp.HasPassword, Version: cp.ProtocolVersion,
		Remote: nc.RemoteAddr(), TLS: tlsState(nc), Listener: h.listener}
	ci.Origin, ci.Path = httpRequestInfo(nc)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	step, err := ea.StartAuth(ctx, ci, method, cp.Properties.AuthData)
	for round := 0; ; round++ {
		if err != nil {
			h.b.auditLog(slog.LevelWarn, "authentication error", slog.String("client_id", cp.ClientID), slog.String("remote", h.remoteAddr()),
				slog.String("method", method), slog.Any("err", err))
			if step.Code == packet.Success {
				step.Code = packet.ServerUnavailable
			}
			return id, step.Code, nil, true
		}
		if step.Next == nil {
			return step.Identity, step.Code, step.Data, true
		}
		if round >= maxAuthRounds {
			return id, packet.NotAuthorized, nil, true
		}
		h.c.Send(&packet.Auth{ReasonCode: packet.ContinueAuthentication,
			Properties: packet.Properties{AuthMethod: method, AuthData: step.Data}})
		p, _, rerr := h.c.ReadPacket(deadline)
		if rerr != nil {
			var pe *packet.Error
			if ne := net.Error(nil); errors.As(rerr, &ne) && ne.Timeout() {
				h.b.exceeded(limConnectTimeout) // the exchange outlasted the connect timeout
			}
			if errors.As(rerr, &pe) {
				h.refuse(pe.Code, pe.Reason)
			} else {
				h.c.Close()
			}
			h.b.auditLog(slog.LevelInfo, "authentication exchange failed", slog.String("client_id", cp.ClientID), slog.String("remote", h.remoteAddr()), slog.Any("err", rerr))
			return id, 0, nil, false
		}
		a, isAuth := p.(*packet.Auth)
		switch {
		case !isAuth:
			h.refuse(packet.ProtocolError, "expected AUTH, got "+packetName(p.Type()))
			return id, 0, nil, false
		case a.ReasonCode != packet.ContinueAuthentication:
			h.refuse(packet.ProtocolError, "AUTH reason code must be 0x18 during authentication")
			return id, 0, nil, false
		case a.Properties.AuthMethod != method:
			// [MQTT-4.12.0-5] the method cannot change.
			h.refuse(packet.ProtocolError, "authentication method differs from CONNECT")
			return id, 0, nil, false
		}
		step, err = step.Next(ctx, a.Properties.AuthData)
	}
}

// reauthState is a re-authentication waiting for the client's next AUTH.
type reauthState struct {
	next   func(ctx context.Context, data []byte) (AuthStep, error)
	rounds int
}

// onAuth handles AUTH after CONNACK: re-authentication (MQTT 5.0 section
// 4.12.1) with the method of CONNECT. The client keeps its session and
// identity; a failure, or authenticating as another user, ends the
// connection with DISCONNECT 0x87. Each step is bounded by the connect
// timeout.
func (h *handler) onAuth(a *packet.Auth) string {
	if h.authMethod == "" {
		// [MQTT-4.12.0-2]... no enhanced authentication in CONNECT.
		return h.fail(packet.ProtocolError, "AUTH without an authentication method")
	}
	if a.Properties.AuthMethod != h.authMethod {
		return h.fail(packet.ProtocolError, "authentication method differs from CONNECT") // [MQTT-4.12.1-1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.b.lim.ConnectTimeout)
	defer cancel()
	var step AuthStep
	var err error
	switch {
	case a.ReasonCode == packet.ReAuthenticate && h.reauth == nil:
		ea, _ := h.b.authn.(EnhancedAuthenticator)
		if ea == nil { // cannot happen: CONNECT was authenticated with it
			return h.fail(packet.NotAuthorized, "re-authentication not available")
		}
		nc := h.c.NetConn()
		ci := &ConnectInfo{ClientID: h.cl.id, Username: h.info.Username, HasUsername: h.info.Username != "",
			Version: h.version, Remote: nc.RemoteAddr(), TLS: tlsState(nc), Listener: h.listener}
		h.reauth = &reauthState{}
		step, err = ea.StartAuth(ctx, ci, h.authMethod, a.Properties.AuthData)
	case a.ReasonCode == packet.ContinueAuthentication && h.reauth != nil:
		if h.reauth.rounds++; h.reauth.rounds > maxAuthRounds {
			return h.fail(packet.NotAuthorized, "re-authentication takes too many rounds")
		}
		step, err = h.reauth.next(ctx, a.Properties.AuthData)
	default:
		return h.fail(packet.ProtocolError, "unexpected AUTH reason code")
	}
	if err != nil {
		h.b.auditLog(slog.LevelWarn, "re-authentication error", slog.String("client_id", h.cl.id), slog.String("remote", h.remoteAddr()), slog.Any("err", err))
		return h.fail(packet.NotAuthorized, "re-authentication failed")
	}
	if step.Next != nil {
		h.reauth.next = step.Next
		h.c.Send(&packet.Auth{ReasonCode: packet.ContinueAuthentication,
			Properties: packet.Properties{AuthMethod: h.authMethod, AuthData: step.Data}})
		return ""
	}
	h.reauth = nil
	if step.Code != packet.Success {
		h.b.auditLog(slog.LevelInfo, "re-authentication failed", slog.String("client_id", h.cl.id), slog.String("remote", h.remoteAddr()),
			slog.String("code", fmt.Sprintf("0x%02x", byte(step.Code))))
		return h.fail(packet.NotAuthorized, "re-authentication failed")
	}
	if step.Identity.Username != h.info.Username {
		return h.fail(packet.NotAuthorized, "re-authentication as another user")
	}
	if step.Identity.Perms != nil || !step.Identity.Expires.IsZero() || h.info.Perms != nil {
		// A fresh token brings its own permissions and expiry.
		info := *h.info
		info.Identity = step.Identity
		h.info = &info
		h.cl.info.Store(h.info)
		h.armExpiry(step.Identity.Expires)
	} else if step.Identity.Credential != nil {
		// What a later RevokeInvalid rechecks is what was just proved.
		ni := *h.info
		ni.Credential = step.Identity.Credential
		h.info = &ni
		h.cl.info.Store(&ni)
	}
	h.c.Send(&packet.Auth{ReasonCode: packet.Success,
		Properties: packet.Properties{AuthMethod: h.authMethod, AuthData: step.Data}})
	return ""
}

// httpToken finds a bearer token the WebSocket transport took from the
// upgrade request, looking through wrappers; nil when none.
func httpToken(nc net.Conn) []byte {
	for i := 0; nc != nil && i < 8; i++ {
		if t, ok := nc.(interface{ HTTPToken() []byte }); ok {
			return t.HTTPToken()
		}
		u, ok := nc.(interface{ Unwrap() net.Conn })
		if !ok {
			return nil
		}
		nc = u.Unwrap()
	}
	return nil
}

// httpRequestInfo finds the Origin and path of the WebSocket upgrade
// request of a connection, looking through wrappers; "" when none.
func httpRequestInfo(nc net.Conn) (origin, path string) {
	for i := 0; nc != nil && i < 8; i++ {
		if t, ok := nc.(interface{ HTTPRequestInfo() (string, string) }); ok {
			return t.HTTPRequestInfo()
		}
		u, ok := nc.(interface{ Unwrap() net.Conn })
		if !ok {
			return "", ""
		}
		nc = u.Unwrap()
	}
	return "", ""
}

// armExpiry (re)starts the timer that ends the connection when the
// client's authority expires; a zero time stops it. Reader goroutine only.
func (h *handler) armExpiry(at time.Time) {
	if h.expiry != nil {
		h.expiry.Stop()
		h.expiry = nil
	}
	if at.IsZero() {
		return
	}
	c, cl := h.c, h.cl
	h.expiry = time.AfterFunc(at.Sub(h.b.now()), func() {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.conn == c {
			cl.closeConn(packet.MaximumConnectTime, "token expired")
		}
	})
}

// allow applies the authorizer, if any.
func (b *Broker) allow(ci *ClientInfo, act Action, topic string) bool {
	if ci != nil && ci.Perms != nil && !ci.Perms.Allow(ci, act, topic) {
		return false
	}
	if b.authz == nil || ci == nil || ci.Superuser {
		return true
	}
	return b.authz.Allow(ci, act, topic)
}
