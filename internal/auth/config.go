package auth

import "github.com/starling-mqtt/starling/internal/auth/authconfig"

// Config is the authentication and authorization configuration, under
// "auth:" in the broker's configuration (see authconfig.Config; it lives
// there so that internal/config can embed it without importing the broker).
type Config = authconfig.Config

// FieldError is a bad configuration value, named by its key path
// ("auth.cert_username").
type FieldError = authconfig.FieldError

// Cert mappings accepted by Config.CertUsername.
const (
	CertOff      = authconfig.CertOff
	CertCN       = authconfig.CertCN
	CertSANEmail = authconfig.CertSANEmail
	CertSANDNS   = authconfig.CertSANDNS
)

// DefaultConfig returns the defaults documented on each Config field.
func DefaultConfig() Config { return authconfig.DefaultConfig() }

// ValidUsername reports why name cannot be a user name in a password file
// or ACL (see authconfig.ValidUsername).
func ValidUsername(name string) error { return authconfig.ValidUsername(name) }

// Authenticators named by Config.Order (auth.order).
const (
	AuthPasswordFile = authconfig.AuthPasswordFile
	AuthJWT          = authconfig.AuthJWT
	AuthHTTP         = authconfig.AuthHTTP
	AuthAnonymous    = authconfig.AuthAnonymous
)
