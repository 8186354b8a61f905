package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/starling-mqtt/starling/internal/auth/jwtauth"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// MethodJWT is the MQTT 5 enhanced authentication method whose
// Authentication Data is a token: in CONNECT it logs in like a token
// password; in AUTH 0x19 it re-authenticates with a fresh token, moving the
// connection's expiry and permissions to the new token's.
const MethodJWT = "JWT"

// token returns the token to check for c, or nil when c logs in otherwise:
// a password shaped like a JWT, or without a password the token taken from
// the WebSocket request.
func (a *Auth) token(c *broker.ConnectInfo) []byte {
	switch {
	case a.jwt.Load() == nil:
		return nil
	case c.HasPassword && jwtauth.LooksLikeToken(c.Password):
		return c.Password
	case !c.HasPassword && len(c.Token) > 0:
		return c.Token
	}
	return nil
}

// tokenLogin verifies a token and returns the identity it gives: the user
// name from its username_claim (the CONNECT user name is ignored), its
// expiry, and its topic lists as Permissions. A refused token is 0x86
// (0x85 when the client ID does not match client_id_claim, 0x87 when a
// topic pattern of the token is not valid), with the reason in the audit
// log.
func (a *Auth) tokenLogin(ctx context.Context, c *broker.ConnectInfo, tok []byte) (broker.Identity, packet.ReasonCode) {
	v := a.jwt.Load()
	if v == nil { // closed meanwhile
		return broker.Identity{}, packet.ServerUnavailable
	}
	cl, err := v.Verify(ctx, string(tok))
	if err != nil {
		a.loginFailed(c, "token: "+err.Error())
		var te *jwtauth.Error
		if !errors.As(err, &te) {
			return broker.Identity{}, packet.ServerUnavailable
		}
		return broker.Identity{}, packet.BadUsernameOrPassword
	}
	if k := a.cfg.JWT.ClientIDClaim; k != "" && cl.ClientID != c.ClientID {
		a.loginFailed(c, fmt.Sprintf("token: client ID does not match the token's %s claim %q", k, cl.ClientID))
		return broker.Identity{}, packet.ClientIDNotValid
	}
	perms, err := a.tokenPerms(cl)
	if err != nil {
		a.loginFailed(c, "token: "+err.Error())
		return broker.Identity{}, packet.NotAuthorized
	}
	id := broker.Identity{Username: cl.Username, Superuser: a.superusers[cl.Username], Expires: cl.Expires}
	if perms != nil {
		id.Perms = perms
	}
	return id, packet.Success
}

// tokenPerms are the topic lists of a token (or of an HTTP hook's
// answer): a publish list (publish) and a subscribe list (subscribe and
// read), each an allow list with %u and %c. An action whose claim is not
// configured is not limited by the token.
type tokenPerms struct {
	a              *Auth
	acl            *ACL
	pubAll, subAll bool
	by             string // "token" or "http", in audit lines
}

// tokenPerms compiles the claims' lists; nil when neither claim is
// configured.
func (a *Auth) tokenPerms(cl *jwtauth.Claims) (*tokenPerms, error) {
	return a.listPerms(cl.Publish, cl.Subscribe, "token", "claim "+a.cfg.JWT.PublishClaim, "claim "+a.cfg.JWT.SubscribeClaim)
}

// listPerms compiles a publish and a subscribe list of topic patterns
// (nil: that action is not limited); nil when both are nil. by names the
// source in denials' audit lines, pubName and subName the lists in errors.
func (a *Auth) listPerms(pub, sub []string, by, pubName, subName string) (*tokenPerms, error) {
	if pub == nil && sub == nil {
		return nil, nil
	}
	p := &tokenPerms{a: a, acl: &ACL{}, pubAll: pub == nil, subAll: sub == nil, by: by}
	add := func(acts uint8, pats []string, name string) error {
		for _, s := range pats {
			pat, err := compilePattern(s)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			r := &rule{order: len(p.acl.rules), allow: true, acts: acts, who: pAny, pat: pat}
			p.acl.rules = append(p.acl.rules, r)
			p.acl.general = append(p.acl.general, r)
		}
		return nil
	}
	if err := add(bitPublish, pub, pubName); err != nil {
		return nil, err
	}
	if err := add(bitSubscribe|bitRead, sub, subName); err != nil {
		return nil, err
	}
	return p, nil
}

// Allow implements broker.Permissions.
func (p *tokenPerms) Allow(c *broker.ClientInfo, act broker.Action, t string) bool {
	if (act == broker.ActPublish && p.pubAll) || (act != broker.ActPublish && p.subAll) {
		return true
	}
	if ok, _ := p.acl.Decide(c, act, t); ok {
		return true
	}
	if p.a.audit.OK() {
		name := "unknown"
		if int(act) < len(actionNames) {
			name = actionNames[act]
		}
		p.a.audit.Log(slog.LevelWarn, "access denied", slog.String("client_id", c.ClientID), slog.String("username", c.Username),
			slog.String("remote", c.Remote), slog.String("action", name), slog.String("topic", t), slog.String("by", p.by))
	}
	return false
}
