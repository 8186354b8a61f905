package auth

import (
	"context"
	"log/slog"

	"github.com/starling-mqtt/starling/internal/auth/authconfig"
	"github.com/starling-mqtt/starling/internal/auth/httpauth"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// HookStats returns the HTTP hook's counters (calls by outcome, cache
// hits); nil without auth.http.
func (a *Auth) HookStats() *httpauth.Stats {
	if a.hook == nil {
		return nil
	}
	return &a.hook.Stats
}

// hookLogin asks the HTTP hook about a CONNECT. decided is false when the
// backend answered ignore, or failed with on_error next: the next
// authenticator decides, and reason says why this one did not.
func (a *Auth) hookLogin(ctx context.Context, c *broker.ConnectInfo) (id broker.Identity, code packet.ReasonCode, decided bool, reason string) {
	req := &httpauth.Request{Action: httpauth.ActionConnect, ClientID: c.ClientID, Username: c.Username,
		Listener: c.Listener, ProtocolVersion: c.Version, Token: string(c.Token)}
	if c.HasPassword {
		req.SetPassword(c.Password)
	}
	if c.Remote != nil {
		req.Remote = c.Remote.String()
	}
	ans, err := a.hook.Ask(ctx, req)
	if err != nil {
		if a.cfg.HTTP.OnError == authconfig.OnErrorNext {
			return id, 0, false, err.Error()
		}
		a.loginFailed(c, err.Error())
		return id, packet.ServerUnavailable, true, ""
	}
	switch ans.Result {
	case httpauth.Ignore:
		return id, 0, false, "http hook: ignored"
	case httpauth.Deny:
		a.loginFailed(c, "http hook: denied")
		if !c.HasUsername && !c.HasPassword && len(c.Token) == 0 {
			return id, packet.NotAuthorized, true, ""
		}
		return id, packet.BadUsernameOrPassword, true, ""
	}
	name := c.Username
	if ans.Username != "" {
		name = ans.Username
	}
	id = broker.Identity{Username: name, Anonymous: name == "", Superuser: ans.Superuser || a.superusers[name]}
	if ans.Publish != nil || ans.Subscribe != nil {
		// A missing list allows nothing of its kind.
		pub, sub := ans.Publish, ans.Subscribe
		if pub == nil {
			pub = []string{}
		}
		if sub == nil {
			sub = []string{}
		}
		p, err := a.listPerms(pub, sub, "http", "http hook's publish list", "http hook's subscribe list")
		if err != nil {
			a.loginFailed(c, "http hook: "+err.Error())
			return broker.Identity{}, packet.NotAuthorized, true, ""
		}
		id.Perms = p
	} else if a.cfg.HTTP.Authorize && !id.Superuser {
		id.Perms = &hookPerms{a: a, listener: c.Listener}
	}
	return id, packet.Success, true, ""
}

// hookPerms asks the HTTP hook about each publish topic and subscription
// filter of a client it let in (auth.http.authorize). Deliveries are not
// asked about: a granted subscription receives what it matches.
type hookPerms struct {
	a        *Auth
	listener string
}

// Allow implements broker.Permissions. It blocks the client's reader for
// at most the hook's timeout (answers are cached).
func (p *hookPerms) Allow(c *broker.ClientInfo, act broker.Action, topic string) bool {
	var action string
	switch act {
	case broker.ActPublish:
		action = httpauth.ActionPublish
	case broker.ActSubscribe:
		action = httpauth.ActionSubscribe
	default:
		return true
	}
	req := &httpauth.Request{Action: action, ClientID: c.ClientID, Username: c.Username, Remote: c.Remote,
		Listener: p.listener, Topic: topic}
	ans, err := p.a.hook.Ask(context.Background(), req)
	switch {
	case err != nil && p.a.cfg.HTTP.OnError == authconfig.OnErrorNext:
		return true // the ACL file (ANDed by the broker) decides
	case err == nil && ans.Result != httpauth.Deny:
		return true // allow, or ignore: the ACL file decides
	}
	if p.a.audit.OK() {
		attrs := []slog.Attr{slog.String("client_id", c.ClientID), slog.String("username", c.Username),
			slog.String("remote", c.Remote), slog.String("action", action), slog.String("topic", topic), slog.String("by", "http")}
		if err != nil {
			attrs = append(attrs, slog.Any("err", err))
		}
		p.a.audit.Log(slog.LevelWarn, "access denied", attrs...)
	}
	return false
}
