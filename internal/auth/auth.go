// Package auth authenticates MQTT clients (a password file of argon2id or
// bcrypt hashes or SCRAM-SHA-256 verifiers, MQTT 5 enhanced authentication
// with SCRAM-SHA-256, TLS client certificates mapped to user names, anonymous
// access on or off) and authorizes what they do (an ACL file of allow/deny
// rules). An *Auth is both the broker's Authenticator and its Authorizer;
// Reload re-reads the files (SIGHUP). See docs/security.md.
package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/starling-mqtt/starling/internal/auth/jwtauth"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/limit"
	"github.com/starling-mqtt/starling/internal/packet"
)

// Auth implements broker.Authenticator and broker.Authorizer. It is safe
// for concurrent use.
type Auth struct {
	cfg         Config
	certMap     string
	log         *slog.Logger
	audit       *limit.Lines
	sem         chan struct{} // one slot per concurrent password verification
	waiting     atomic.Int64  // CONNECTs waiting for a slot
	maxWaiting  int64         // more are refused at once
	superusers  map[string]bool
	scramSecret []byte                           // keys the made-up SCRAM salts of unknown users
	clientCAs   func() *x509.CertPool            // for StillValid; nil: certificates not rechecked
	jwt         atomic.Pointer[jwtauth.Verifier] // nil without auth.jwt; replaced by Reload
	state       atomic.Pointer[state]
}

var (
	_ broker.Authenticator = (*Auth)(nil)
	_ broker.Authorizer    = (*Auth)(nil)
)

// state is what the files say; replaced as a whole by Reload.
type state struct {
	users     map[string]*hash // nil without a password file
	dummy     *hash            // verified for unknown users, so they cost one hash too
	scramIter int              // SCRAM iterations shown to users without a SCRAM entry
	acl       *ACL             // nil without an ACL file: everything allowed
}

// New checks cfg, reads its files and returns the authenticator and
// authorizer. log receives the audit trail and reload messages (nil:
// slog.Default()).
func New(cfg Config, log *slog.Logger) (*Auth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Auth{
		cfg:         cfg,
		certMap:     cfg.CertMapping(),
		log:         log,
		audit:       newAudit(log, cfg.AuditRate()),
		sem:         make(chan struct{}, cfg.MaxVerifications()),
		maxWaiting:  int64(cfg.MaxPending()),
		superusers:  make(map[string]bool, len(cfg.Superusers)),
		scramSecret: make([]byte, 32),
	}
	rand.Read(a.scramSecret)
	for _, s := range cfg.Superusers {
		a.superusers[s] = true
	}
	st, err := a.load()
	if err != nil {
		return nil, err
	}
	a.state.Store(st)
	if cfg.JWT.Enabled() {
		v, err := jwtauth.New(cfg.JWT, log)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		a.jwt.Store(v)
	}
	return a, nil
}

// Close stops background work (JWKS refreshes).
func (a *Auth) Close() {
	if v := a.jwt.Swap(nil); v != nil {
		v.Close()
	}
}

// Reload re-reads the password and ACL files and the token keys. On
// success the new rules apply to the next CONNECT and the next message of
// every existing subscription; on error nothing changes and the error is
// returned.
func (a *Auth) Reload() error {
	st, err := a.load()
	if err != nil {
		return fmt.Errorf("auth: reload (old rules kept): %w", err)
	}
	if a.cfg.JWT.Enabled() {
		// The token keys too: a rotated secret or public key file, and a
		// fresh JWKS fetch.
		v, err := jwtauth.New(a.cfg.JWT, a.log)
		if err != nil {
			return fmt.Errorf("auth: reload (old rules and keys kept): %w", err)
		}
		if old := a.jwt.Swap(v); old != nil {
			old.Close()
		}
	}
	a.state.Store(st)
	users, rules := -1, -1
	if st.users != nil {
		users = len(st.users)
	}
	if st.acl != nil {
		rules = st.acl.Len()
	}
	a.log.Info("auth reloaded", "users", users, "acl_rules", rules)
	return nil
}

func (a *Auth) load() (*state, error) {
	st := &state{}
	if f := a.cfg.PasswordFile; f != "" {
		data, err := a.readFile(f, "auth.password_file")
		if err != nil {
			return nil, err
		}
		users, entries, err := parsePasswords(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("auth: password file %s: %w", f, err)
		}
		st.users = users
		st.scramIter = DefaultSCRAMIterations
		for _, e := range entries {
			if h := users[e.User]; h.scram != nil {
				st.scramIter = h.scram.iter
				break
			}
		}
		if len(entries) > 0 {
			// The first user's hash: unknown users then cost what a
			// typical known user costs (files usually share parameters).
			st.dummy = users[entries[0].User]
		} else {
			h, _ := HashPassword([]byte("dummy"), DefaultArgon2)
			st.dummy, _ = parseHash(h)
		}
	}
	if f := a.cfg.ACLFile; f != "" {
		data, err := a.readFile(f, "auth.acl_file")
		if err != nil {
			return nil, err
		}
		acl, err := ParseACL(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("auth: acl file %s: %w", f, err)
		}
		if acl.Len() == 0 {
			a.log.Warn("acl file has no rules: every publish, subscribe and delivery is denied", "file", f)
		}
		st.acl = acl
	}
	return st, nil
}

// maxFileSize bounds the password and ACL files read into memory.
const maxFileSize = 64 << 20

func (a *Auth) readFile(name, key string) ([]byte, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, fmt.Errorf("auth: %s: %w", key, err)
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("auth: %s: %s is larger than %d bytes", key, name, maxFileSize)
	}
	if key == "auth.password_file" && fi.Mode().Perm()&0o004 != 0 {
		a.log.Warn("password file is readable by every user; chmod 600 or 640 it", "file", name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("auth: %s: %w", key, err)
	}
	return data, nil
}

// Authenticate decides who a connecting client is:
//
//  1. With cert_username set and a verified client certificate holding the
//     chosen field, the client is that user (the CONNECT user name and
//     password are ignored).
//  2. With auth.jwt, a password shaped like a JWT (or, without a password,
//     a token from the WebSocket request) is checked as a token only; the
//     CONNECT user name is ignored (see tokenLogin).
//  3. Else, with a user name: with a password file, the password must
//     verify (0x86 otherwise; an unknown user costs one hash, like a known
//     one); without one the name cannot be checked, so the client is
//     anonymous (allowed only where anonymous clients are; 0x86 otherwise).
//  4. Else the client is anonymous: allowed with allow_anonymous or on a
//     listener of anonymous_listeners (c.Listener), 0x87 otherwise.
//
// When max_concurrent_verifications hashes are already running, a client
// waits for a slot until ctx ends, then gets 0x89 (server busy).
func (a *Auth) Authenticate(ctx context.Context, c *broker.ConnectInfo) (broker.Identity, packet.ReasonCode, error) {
	st := a.state.Load()
	if name := a.certName(c); name != "" {
		return broker.Identity{Username: name, Superuser: a.superusers[name], Credential: &certCred{c.TLS.PeerCertificates}}, packet.Success, nil
	}
	if tok := a.token(c); tok != nil {
		id, code := a.tokenLogin(ctx, c, tok)
		return id, code, nil
	}
	if c.HasUsername {
		if st.users == nil {
			if a.cfg.AnonymousAllowed(c.Listener) {
				return broker.Identity{Anonymous: true}, packet.Success, nil
			}
			a.loginFailed(c, "no password file to check the user name")
			return broker.Identity{}, packet.BadUsernameOrPassword, nil
		}
		if !c.HasPassword {
			a.loginFailed(c, "no password")
			return broker.Identity{}, packet.BadUsernameOrPassword, nil
		}
		if ok, queued := a.acquire(ctx); !ok {
			reason := "too many concurrent password verifications"
			if !queued {
				reason = "too many pending password verifications"
			}
			a.loginFailed(c, reason)
			return broker.Identity{}, packet.ServerBusy, nil
		}
		h, known := st.users[c.Username]
		var ok bool
		if known {
			ok = h.verify(c.Password)
		} else {
			st.dummy.verify(c.Password)
		}
		<-a.sem
		switch {
		case !known:
			a.loginFailed(c, "unknown user")
			return broker.Identity{}, packet.BadUsernameOrPassword, nil
		case !ok:
			a.loginFailed(c, "wrong password")
			return broker.Identity{}, packet.BadUsernameOrPassword, nil
		}
		return broker.Identity{Username: c.Username, Superuser: a.superusers[c.Username],
			Credential: passwordCred{user: c.Username, hash: h.text}}, packet.Success, nil
	}
	if a.cfg.AnonymousAllowed(c.Listener) {
		return broker.Identity{Anonymous: true}, packet.Success, nil
	}
	a.loginFailed(c, "anonymous access is off")
	return broker.Identity{}, packet.NotAuthorized, nil
}

// acquire takes a verification slot, waiting until ctx ends, unless
// maxWaiting others wait already: then it fails at once with queued false.
func (a *Auth) acquire(ctx context.Context) (ok, queued bool) {
	select {
	case a.sem <- struct{}{}:
		return true, true
	default:
	}
	if a.waiting.Add(1) > a.maxWaiting {
		a.waiting.Add(-1)
		return false, false
	}
	defer a.waiting.Add(-1)
	select {
	case a.sem <- struct{}{}:
		return true, true
	case <-ctx.Done():
		return false, true
	}
}

// certName returns the user name mapped from c's verified client
// certificate, or "".
func (a *Auth) certName(c *broker.ConnectInfo) string {
	if a.certMap == CertOff || c.TLS == nil || len(c.TLS.VerifiedChains) == 0 || len(c.TLS.PeerCertificates) == 0 {
		return ""
	}
	name := certField(c.TLS.PeerCertificates[0], a.certMap)
	if name == "" {
		return ""
	}
	if err := ValidUsername(name); err != nil {
		a.loginFailed(c, "client certificate name not usable: "+err.Error())
		return ""
	}
	return name
}

func certField(cert *x509.Certificate, field string) string {
	switch field {
	case CertCN:
		return cert.Subject.CommonName
	case CertSANEmail:
		if len(cert.EmailAddresses) > 0 {
			return cert.EmailAddresses[0]
		}
	case CertSANDNS:
		if len(cert.DNSNames) > 0 {
			return cert.DNSNames[0]
		}
	}
	return ""
}

func (a *Auth) loginFailed(c *broker.ConnectInfo, reason string) {
	if !a.audit.OK() {
		return
	}
	remote := ""
	if c.Remote != nil {
		remote = c.Remote.String()
	}
	attrs := []slog.Attr{slog.String("client_id", c.ClientID), slog.String("username", c.Username), slog.String("remote", remote)}
	if c.Listener != "" {
		attrs = append(attrs, slog.String("listener", c.Listener))
	}
	a.audit.Log(slog.LevelWarn, "login failed", append(attrs, slog.String("reason", reason))...)
}

var actionNames = [...]string{broker.ActPublish: "publish", broker.ActSubscribe: "subscribe", broker.ActRead: "read"}

// Allow reports whether the client may do act on topic: always without an
// ACL file or for a superuser, else as the ACL decides (see ACL.Decide).
// It does not allocate when access is allowed. Denials go to the audit log.
func (a *Auth) Allow(c *broker.ClientInfo, act broker.Action, topic string) bool {
	acl := a.state.Load().acl
	if acl == nil {
		return true
	}
	if c == nil {
		return false
	}
	if c.Superuser {
		return true
	}
	ok, line := acl.Decide(c, act, topic)
	if !ok {
		a.denied(c, act, topic, line)
	}
	return ok
}

func (a *Auth) denied(c *broker.ClientInfo, act broker.Action, topic string, line int) {
	if !a.audit.OK() {
		return
	}
	name := "unknown"
	if int(act) < len(actionNames) {
		name = actionNames[act]
	}
	a.audit.Log(slog.LevelWarn, "access denied", slog.String("client_id", c.ClientID), slog.String("username", c.Username),
		slog.String("remote", c.Remote), slog.String("action", name), slog.String("topic", topic),
		slog.Int("acl_line", line))
}
