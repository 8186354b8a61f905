package broker

import (
	"context"
	"crypto/tls"
	"net"

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
}

// Identity is who a client is once authenticated.
type Identity struct {
	Username  string // from CONNECT or mapped from a client certificate; "" for anonymous
	Anonymous bool
	Superuser bool // bypasses the Authorizer
}

// Authenticator decides who may connect. It returns the client's identity,
// or a reason code to refuse with (0x86 bad user name or password, 0x87 not
// authorized, 0x8C bad authentication method, 0x89 server busy...).
// Implementations must be safe for concurrent use and bound their own CPU
// use (a CONNECT storm must not exhaust the machine).
type Authenticator interface {
	Authenticate(ctx context.Context, c *ConnectInfo) (Identity, packet.ReasonCode, error)
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
	if h.b.authn == nil {
		return id, packet.Success
	}
	nc := h.c.NetConn()
	ci := &ConnectInfo{ClientID: cp.ClientID, Username: cp.Username, HasUsername: cp.HasUsername,
		Password: cp.Password, HasPassword: cp.HasPassword, Version: cp.ProtocolVersion,
		Remote: nc.RemoteAddr(), TLS: tlsState(nc)}
	ctx, cancel := context.WithTimeout(context.Background(), h.b.lim.ConnectTimeout)
	defer cancel()
	id, code, err := h.b.authn.Authenticate(ctx, ci)
	if err != nil {
		h.b.log.Warn("authentication error", "client_id", cp.ClientID, "remote", h.remote, "err", err)
		if code == packet.Success {
			code = packet.ServerUnavailable
		}
	}
	return id, code
}

// allow applies the authorizer, if any.
func (b *Broker) allow(ci *ClientInfo, act Action, topic string) bool {
	if b.authz == nil || ci == nil || ci.Superuser {
		return true
	}
	return b.authz.Allow(ci, act, topic)
}
