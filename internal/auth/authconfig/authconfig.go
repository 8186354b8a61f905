// Package authconfig holds the configuration of package auth, apart from it
// so that internal/config can embed it without importing the broker (auth
// implements the broker's hooks, and the broker imports internal/config).
package authconfig

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Config is the authentication and authorization configuration, under
// "auth:" in the broker's configuration. Start from DefaultConfig.
type Config struct {
	// AllowAnonymous lets clients without a user name (and without a mapped
	// client certificate) connect. Default true for now; set it to false in
	// production. A refused anonymous client gets 0x87 (not authorized; 3.x:
	// 5).
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// AnonymousListeners names the listeners (tcp, mqtts, http, https,
	// listen_any) on which anonymous clients are let in although
	// allow_anonymous is false: plain TCP on loopback for local tools, say,
	// while every other listener requires a password or a certificate.
	// Only with allow_anonymous false.
	AnonymousListeners []string `yaml:"anonymous_listeners"`
	// PasswordFile is a file of "user:hash" lines (argon2id in PHC format, or
	// bcrypt $2a$/$2b$/$2y$), managed with "starling passwd". Empty: no
	// passwords, and a client giving a user name is treated as anonymous
	// (its name cannot be verified). Reloaded on SIGHUP.
	PasswordFile string `yaml:"password_file"`
	// ACLFile is a file of allow/deny rules (docs/security.md). Empty: every
	// client may publish, subscribe and read everything. Set: what no rule
	// allows is denied. Reloaded on SIGHUP; a reload applies to existing
	// subscriptions at their next message.
	ACLFile string `yaml:"acl_file"`
	// CertUsername maps a verified TLS client certificate to the user name:
	// off (default), cn (subject common name), san_email (first e-mail
	// subject alternative name) or san_dns (first DNS SAN). The mapped
	// name wins over any user name in CONNECT, and no password is needed.
	CertUsername string `yaml:"cert_username"`
	// MaxConcurrentVerifications bounds password hashes computed at once
	// (each argon2id verification uses the hash's memory, 19 MiB with the
	// default parameters). A CONNECT that cannot get a slot before the
	// connect timeout is refused with 0x89 (server busy; 3.x: 3, server
	// unavailable). 0 means 2 × GOMAXPROCS.
	MaxConcurrentVerifications int `yaml:"max_concurrent_verifications"`
	// MaxPendingVerifications bounds the CONNECTs waiting for one of
	// those slots; one more is refused at once with 0x89 (3.x: 3), so a
	// login flood cannot park thousands of connections (their goroutines,
	// buffers and packets) for the connect timeout. 0 means
	// 8 × the verification slots.
	MaxPendingVerifications int `yaml:"max_pending_verifications"`
	// Superusers are user names that bypass the ACL. They must
	// authenticate (password or certificate) like anyone else.
	Superusers []string `yaml:"superusers"`
	// AuditLinesPerSecond bounds the audit log (failed logins, denials,
	// and the broker's lines about refused CONNECTs): lines beyond it are
	// counted and summarised as "audit lines suppressed". 0 means the
	// default, 20.
	AuditLinesPerSecond int `yaml:"audit_lines_per_second"`
	// JWT lets clients authenticate with a signed token (JSON Web Token)
	// as the CONNECT password; off unless a key source is set.
	JWT JWT `yaml:"jwt"`
	// HTTP asks the application's backend about CONNECTs (and, with
	// authorize, publishes and subscriptions); off unless url is set.
	HTTP HTTP `yaml:"http"`
	// Order is the order in which the authenticators are asked about a
	// CONNECT: password_file, jwt, http, anonymous (empty: that order).
	// Each either decides (lets the client in, or refuses it) or falls
	// through to the next; one that is not configured is skipped, and a
	// configured one must be listed. A verified client certificate
	// (cert_username) is asked before all of them.
	Order []string `yaml:"order"`
}

// DefaultConfig returns the defaults documented on each field.
func DefaultConfig() Config {
	return Config{AllowAnonymous: true, CertUsername: "off", JWT: DefaultJWT(), HTTP: DefaultHTTP(),
		Order: append([]string(nil), DefaultOrder...)}
}

// Listeners are the names of the broker's listeners, as in its
// configuration keys and in broker.ConnectInfo.Listener.
var Listeners = []string{"tcp", "mqtts", "http", "https", "listen_any"}

// AnonymousAllowed reports whether anonymous clients are let in on the
// named listener.
func (c Config) AnonymousAllowed(listener string) bool {
	return c.AllowAnonymous || listener != "" && slices.Contains(c.AnonymousListeners, listener)
}

// Cert mappings accepted by Config.CertUsername.
const (
	CertOff      = "off"
	CertCN       = "cn"
	CertSANEmail = "san_email"
	CertSANDNS   = "san_dns"
)

// FieldError is a bad value, named by its key path ("auth.cert_username").
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// Validate reports every bad value as a *FieldError with key "auth.<key>",
// joined with errors.Join; nil when c is usable. It does not read the
// files: New does.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: "auth." + key, Msg: fmt.Sprintf(format, args...)})
	}
	switch c.CertUsername {
	case "", CertOff, CertCN, CertSANEmail, CertSANDNS:
	default:
		bad("cert_username", "must be off, cn, san_email or san_dns (got %q)", c.CertUsername)
	}
	if c.MaxConcurrentVerifications < 0 {
		bad("max_concurrent_verifications", "must be >= 0 (got %d)", c.MaxConcurrentVerifications)
	}
	if c.MaxPendingVerifications < 0 {
		bad("max_pending_verifications", "must be >= 0 (got %d)", c.MaxPendingVerifications)
	}
	if c.AuditLinesPerSecond < 0 {
		bad("audit_lines_per_second", "must be >= 0 (got %d)", c.AuditLinesPerSecond)
	}
	for i, s := range c.Superusers {
		if err := ValidUsername(s); err != nil {
			bad(fmt.Sprintf("superusers[%d]", i), "%v", err)
		}
	}
	for i, l := range c.AnonymousListeners {
		switch {
		case !slices.Contains(Listeners, l):
			bad(fmt.Sprintf("anonymous_listeners[%d]", i), "must be one of %s (got %q)", strings.Join(Listeners, ", "), l)
		case slices.Index(c.AnonymousListeners, l) != i:
			bad(fmt.Sprintf("anonymous_listeners[%d]", i), "%s is listed twice", l)
		}
	}
	if c.AllowAnonymous && len(c.AnonymousListeners) > 0 {
		bad("anonymous_listeners", "set while allow_anonymous is true, which already lets anonymous clients in on every listener; set allow_anonymous: false")
	}
	if !c.AllowAnonymous && len(c.AnonymousListeners) == 0 && c.PasswordFile == "" && c.CertMapping() == CertOff && !c.JWT.Enabled() && !c.HTTP.Enabled() {
		bad("allow_anonymous", "false with neither auth.password_file, auth.cert_username, auth.jwt nor auth.http: no client could connect")
	}
	errs = append(errs, c.JWT.validate()...)
	errs = append(errs, c.HTTP.validate()...)
	errs = append(errs, c.validateOrder()...)
	return errors.Join(errs...)
}

// CertMapping returns CertUsername, with "" read as off.
func (c Config) CertMapping() string {
	if c.CertUsername == "" {
		return CertOff
	}
	return c.CertUsername
}

// MaxVerifications returns MaxConcurrentVerifications, with 0 read as
// 2 × GOMAXPROCS.
func (c Config) MaxVerifications() int {
	if c.MaxConcurrentVerifications > 0 {
		return c.MaxConcurrentVerifications
	}
	return 2 * runtime.GOMAXPROCS(0)
}

// MaxPending returns MaxPendingVerifications, with 0 read as
// 8 × MaxVerifications().
func (c Config) MaxPending() int {
	if c.MaxPendingVerifications > 0 {
		return c.MaxPendingVerifications
	}
	return 8 * c.MaxVerifications()
}

// AuditRate returns AuditLinesPerSecond, with 0 read as 20.
func (c Config) AuditRate() int {
	if c.AuditLinesPerSecond > 0 {
		return c.AuditLinesPerSecond
	}
	return 20
}

// ValidUsername reports why name cannot be a user name in a password file
// or ACL: empty, longer than 65535 bytes, not UTF-8, starting or ending with
// a space, or containing ':', '"' or a control character. Spaces inside a
// name are allowed (an ACL quotes such a name: user "Jane Doe").
func ValidUsername(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case len(name) > 65535:
		return errors.New("user name longer than 65535 bytes")
	case !utf8.ValidString(name):
		return errors.New("user name is not valid UTF-8")
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return fmt.Errorf("user name %q starts or ends with a space", name)
	}
	for _, r := range name {
		if r == ':' || r == '"' || unicode.IsControl(r) {
			return fmt.Errorf("user name %q contains %q (no ':', '\"' or control characters)", name, r)
		}
	}
	return nil
}
