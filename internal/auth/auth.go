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
	"slices"
	"sync/atomic"

	"github.com/starling-mqtt/starling/internal/auth/httpauth"
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
	scramSecret []byte                            // keys the made-up SCRAM salts of unknown users
	clientCAs   func() *x509.CertPool             // for StillValid; nil: certificates not rechecked
	jwt         atomic.Pointer[jwtauth.Verifier]  // nil without auth.jwt; replaced by Reload
	hook        *httpauth.Hook                    // nil without auth.http
	order       []string                          // auth.order
	onFailed    func(*broker.ConnectInfo, string) // OnLoginFailed
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
		order:       cfg.AuthOrder(),
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
	if cfg.HTTP.Enabled() {
		h, err := httpauth.New(cfg.HTTP)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("auth: %w", err)
		}
		a.hook = h
	}
	return a, nil
}

// Close stops background work (JWKS refreshes, idle connections to the
// HTTP hook's backend).
func (a *Auth) Close() {
	if v := a.jwt.Swap(nil); v != nil {
		v.Close()
	}
	if a.hook != nil {
		a.hook.Close()
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
	if a.hook != nil {
		a.hook.Purge() // the backend's answers may have changed too
	}
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

// Authenticate decides who a connecting client is. With cert_username set
// and a verified client certificate holding the chosen field, the client
// is that user (the CONNECT user name and password are ignored).
// Otherwise the authenticators of auth.order are asked in turn (those not
// configured are skipped), each deciding or falling through:
//
//   - password_file decides for a user name it holds: the password must
//     verify (0x86 otherwise, or without a password). It falls through for
//     a client without a user name, a password shaped like a token (with
//     auth.jwt), and an unknown user name, which no later authenticator
//     may then let in anonymously (when nothing after it can check names,
//     an unknown user costs one hash, like a known one).
//   - jwt decides for a token (see tokenLogin): a bad one is refused, not
//     passed on. It falls through for a client without one.
//   - http asks the backend, which decides (allow, deny) or falls through
//     (ignore); a failed call refuses with 0x88, or with on_error next
//     falls through.
//   - anonymous lets a client in as anonymous where anonymous clients are
//     allowed (allow_anonymous, or its listener in anonymous_listeners),
//     when it gave no user name or when no configured authenticator can
//     check user names (no password file, no HTTP hook: the name is then
//     dropped). It never admits an unknown user of the password file.
//
// What none admits is refused: 0x87 without a user name, 0x86 with one.
// When max_concurrent_verifications hashes are already running, a client
// waits for a slot until ctx ends, then gets 0x89 (server busy).
func (a *Auth) Authenticate(ctx context.Context, c *broker.ConnectInfo) (broker.Identity, packet.ReasonCode, error) {
	if name := a.certName(c); name != "" {
		return broker.Identity{Username: name, Superuser: a.superusers[name], Credential: &certCred{c.TLS.PeerCertificates}}, packet.Success, nil
	}
	st := a.state.Load()
	var reason string // why the last authenticator that fell through did not admit the client
	unknown := false  // the password file does not know the user name: not anonymous either
	for i, step := range a.order {
		switch step {
		case AuthPasswordFile:
			if st.users == nil || !c.HasUsername || a.token(c) != nil {
				continue
			}
			h, known := st.users[c.Username]
			if !known {
				unknown, reason = true, "unknown user"
				if c.HasPassword && !a.hookAfter(i) {
					// Unknown users cost one hash too: no user
					// enumeration by timing.
					if code, ok := a.verifySlot(ctx, c); !ok {
						return broker.Identity{}, code, nil
					}
					st.dummy.verify(c.Password)
					<-a.sem
				}
				continue
			}
			return a.passwordLogin(ctx, c, h)
		case AuthJWT:
			if tok := a.token(c); tok != nil {
				id, code := a.tokenLogin(ctx, c, tok)
				return id, code, nil
			}
		case AuthHTTP:
			if a.hook == nil {
				continue
			}
			id, code, decided, why := a.hookLogin(ctx, c)
			if decided {
				return id, code, nil
			}
			reason = why
		case AuthAnonymous:
			if !unknown && a.cfg.AnonymousAllowed(c.Listener) && (!c.HasUsername || !a.checksNames(st)) {
				return broker.Identity{Anonymous: true}, packet.Success, nil
			}
		}
	}
	switch {
	case reason != "":
	case !c.HasUsername:
		a.loginFailed(c, "anonymous access is off")
		return broker.Identity{}, packet.NotAuthorized, nil
	case !a.checksNames(st):
		reason = "no password file to check the user name"
	default:
		reason = "no authenticator admitted the client"
	}
	a.loginFailed(c, reason)
	if !c.HasUsername && !c.HasPassword && len(c.Token) == 0 {
		return broker.Identity{}, packet.NotAuthorized, nil
	}
	return broker.Identity{}, packet.BadUsernameOrPassword, nil
}

// checksNames reports whether a configured authenticator can check user
// names (a password file, the HTTP hook).
func (a *Auth) checksNames(st *state) bool { return st.users != nil || a.hook != nil }

// hookAfter reports whether the HTTP hook comes after position i of the
// order (and is configured).
func (a *Auth) hookAfter(i int) bool {
	return a.hook != nil && slices.Contains(a.order[i+1:], AuthHTTP)
}

// passwordLogin verifies the password of a user of the password file.
func (a *Auth) passwordLogin(ctx context.Context, c *broker.ConnectInfo, h *hash) (broker.Identity, packet.ReasonCode, error) {
	if !c.HasPassword {
		a.loginFailed(c, "no password")
		return broker.Identity{}, packet.BadUsernameOrPassword, nil
	}
	if code, ok := a.verifySlot(ctx, c); !ok {
		return broker.Identity{}, code, nil
	}
	ok := h.verify(c.Password)
	<-a.sem
	if !ok {
		a.loginFailed(c, "wrong password")
		return broker.Identity{}, packet.BadUsernameOrPassword, nil
	}
	return broker.Identity{Username: c.Username, Superuser: a.superusers[c.Username],
		Credential: passwordCred{user: c.Username, hash: h.text}}, packet.Success, nil
}

// verifySlot takes a verification slot (see acquire), or logs the refusal
// and returns the code to refuse with.
func (a *Auth) verifySlot(ctx context.Context, c *broker.ConnectInfo) (packet.ReasonCode, bool) {
	ok, queued := a.acquire(ctx)
	if ok {
		return packet.Success, true
	}
	reason := "too many concurrent password verifications"
	if !queued {
		reason = "too many pending password verifications"
	}
	a.loginFailed(c, reason)
	return packet.ServerBusy, false
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

// OnLoginFailed sets a function called for every refused login (before
// the audit log's rate limit), so that refusals can be counted. Call it
// before serving.
func (a *Auth) OnLoginFailed(f func(c *broker.ConnectInfo, reason string)) { a.onFailed = f }

func (a *Auth) loginFailed(c *broker.ConnectInfo, reason string) {
	if a.onFailed != nil {
		a.onFailed(c, reason)
	}
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
	if c.Path != "" {
		// Over WebSocket: where a browser page came from.
		attrs = append(attrs, slog.String("origin", c.Origin), slog.String("path", c.Path))
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
