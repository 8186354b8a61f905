package starling

import (
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// The hooks an embedding program uses to decide who connects (an
// Authenticator) and what a client may do (an Authorizer), in place of the
// password and ACL files of Config.Auth. Install them with WithAuthenticator
// and WithAuthorizer; see docs/security.md.
type (
	// Authenticator decides who may connect. Authenticate returns the
	// client's Identity and ReasonSuccess, or the reason code to refuse
	// the CONNECT with: ReasonBadUsernameOrPassword (0x86),
	// ReasonNotAuthorized (0x87), ReasonServerBusy (0x89), ReasonBanned
	// (0x8A)... 3.x clients get the closest 3.x return code. A non-nil
	// error is logged and refuses the client with the code given, or 0x88
	// (server unavailable) when that is ReasonSuccess. ctx ends at the
	// connect timeout. Implementations must be safe for concurrent use and
	// bound their own CPU use: a CONNECT storm calls them concurrently.
	Authenticator = broker.Authenticator
	// EnhancedAuthenticator is an Authenticator that also runs MQTT 5
	// enhanced authentication (AUTH packets) for the methods it lists.
	EnhancedAuthenticator = broker.EnhancedAuthenticator
	// AuthStep is one server step of an enhanced authentication exchange.
	AuthStep = broker.AuthStep
	// ConnectInfo is what an Authenticator sees of a connecting client:
	// client ID, user name and password as sent, protocol version, the
	// real remote address, the TLS state (with a verified client
	// certificate, if any), the listener's name, and a bearer token from
	// the WebSocket upgrade request (auth.jwt.query_param, auth.jwt.cookie)
	// when CONNECT has no password.
	ConnectInfo = broker.ConnectInfo
	// Identity is who a client is once authenticated. A Superuser
	// bypasses the Authorizer. A non-zero Expires ends the connection then
	// (MQTT 5: DISCONNECT 0xA0); non-nil Perms must allow what the client
	// does as well as the Authorizer.
	Identity = broker.Identity
	// Permissions are one client's own limits (a token's topic lists),
	// set in its Identity and checked before the Authorizer.
	Permissions = broker.Permissions
	// Authorizer decides what a connected client may do. Allow is called
	// for every publish, subscription filter and will, and for every
	// delivery (ActRead, retained messages included), so it must be fast
	// and safe for concurrent use; a change in its answers applies to
	// existing subscriptions at their next message.
	Authorizer = broker.Authorizer
	// ClientInfo is what an Authorizer sees of a client: its client ID,
	// Identity and remote address.
	ClientInfo = broker.ClientInfo
	// Action is what a client asks to do with a topic.
	Action = broker.Action
	// ReasonCode is an MQTT 5 reason code.
	ReasonCode = packet.ReasonCode
)

// Actions an Authorizer is asked about.
const (
	ActPublish   = broker.ActPublish   // publish to a topic name (also a will)
	ActSubscribe = broker.ActSubscribe // subscribe with a topic filter
	ActRead      = broker.ActRead      // receive a message on a topic name (also a retained one)
)

// Reason codes an Authenticator returns.
const (
	ReasonSuccess               = packet.Success
	ReasonBadUsernameOrPassword = packet.BadUsernameOrPassword   // 0x86; 3.x: 4
	ReasonNotAuthorized         = packet.NotAuthorized           // 0x87; 3.x: 5
	ReasonServerUnavailable     = packet.ServerUnavailable       // 0x88; 3.x: 3
	ReasonServerBusy            = packet.ServerBusy              // 0x89; 3.x: 3
	ReasonBanned                = packet.Banned                  // 0x8A; 3.x: 3
	ReasonBadAuthMethod         = packet.BadAuthenticationMethod // 0x8C; 3.x: 3
)

// WithAuthenticator makes a decide who may connect, instead of the
// password file, client certificate mapping and anonymous settings of
// Config.Auth (which then only configure the management API's own
// checks). An a that also implements EnhancedAuthenticator is offered
// MQTT 5 AUTH exchanges. nil keeps the built-in authenticator.
func WithAuthenticator(a Authenticator) Option { return func(s *Server) { s.authn = a } }

// WithAuthorizer makes z decide what clients may publish, subscribe to and
// receive, instead of Config.Auth.ACLFile. nil keeps the built-in ACL.
func WithAuthorizer(z Authorizer) Option { return func(s *Server) { s.authz = z } }
