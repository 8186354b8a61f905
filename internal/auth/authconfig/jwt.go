package authconfig

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// JWT configures token authentication (auth.jwt). It is on when at least
// one key source (SecretFile, PublicKeyFile, JWKSURL) is set.
type JWT struct {
	// SecretFile holds the shared secret of HS256/HS384/HS512 tokens (the
	// whole file, a trailing newline removed; at least 32 bytes).
	SecretFile string `yaml:"secret_file"`
	// PublicKeyFile is a PEM public key (RSA, ECDSA P-256 or Ed25519) for
	// RS256, ES256 and EdDSA tokens without a kid, or without a JWKS.
	PublicKeyFile string `yaml:"public_key_file"`
	// JWKSURL is an https:// (or, for tests and local issuers, http://)
	// URL of a JSON Web Key Set: fetched at start, every
	// JWKSRefreshInterval, and again when a token names an unknown kid (at
	// most once per JWKSMinRefreshInterval). Keys already fetched are kept
	// while the URL fails.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSRefreshInterval is how often the JWKS is fetched again (0: 1h).
	JWKSRefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// JWKSMinRefreshInterval rate-limits fetches caused by unknown kids, so
	// that tokens with made-up kids cannot hammer the issuer.
	JWKSMinRefreshInterval time.Duration `yaml:"jwks_min_refresh_interval"`
	// Algorithms accepted; empty: HS256, HS384, HS512 with a secret file
	// and RS256, ES256, EdDSA with a public key or JWKS. "none" is never
	// accepted.
	Algorithms []string `yaml:"algorithms"`
	// Issuer, when set, must equal the token's iss claim.
	Issuer string `yaml:"issuer"`
	// Audience, when set, must be in the token's aud claim.
	Audience string `yaml:"audience"`
	// Leeway tolerates clock skew between the issuer and the broker when
	// checking exp and nbf; the client is disconnected at exp plus
	// the leeway.
	Leeway time.Duration `yaml:"leeway"`
	// UsernameClaim names the claim holding the user name (for the ACL
	// and superusers; "" means sub); the CONNECT user name is ignored.
	UsernameClaim string `yaml:"username_claim"`
	// ClientIDClaim, when set, names a claim the CONNECT client ID must
	// equal (0x85 client identifier not valid otherwise).
	ClientIDClaim string `yaml:"client_id_claim"`
	// PublishClaim, when set, names a claim listing the topic patterns
	// (with %u and %c) the client may publish to; a token without it may
	// publish nothing. ANDed with the ACL file.
	PublishClaim string `yaml:"publish_claim"`
	// SubscribeClaim, when set, names a claim listing the topic patterns
	// the client may subscribe to and receive; as PublishClaim.
	SubscribeClaim string `yaml:"subscribe_claim"`
	// QueryParam accepts the token from an access_token query parameter
	// of the WebSocket URL when CONNECT carries no password.
	QueryParam bool `yaml:"query_param"`
	// Cookie, when set, names a cookie of the WebSocket upgrade request
	// that carries the token when CONNECT carries no password.
	Cookie string `yaml:"cookie"`
}

// DefaultJWT returns the defaults documented on each JWT field.
func DefaultJWT() JWT {
	return JWT{JWKSRefreshInterval: time.Hour, JWKSMinRefreshInterval: time.Minute, Leeway: 10 * time.Second, UsernameClaim: "sub"}
}

// Enabled reports whether token authentication is on.
func (j JWT) Enabled() bool { return j.SecretFile != "" || j.PublicKeyFile != "" || j.JWKSURL != "" }

// HMACAlgorithms and PublicKeyAlgorithms are the algorithms supported.
var (
	HMACAlgorithms      = []string{"HS256", "HS384", "HS512"}
	PublicKeyAlgorithms = []string{"RS256", "ES256", "EdDSA"}
)

// AllowedAlgorithms returns Algorithms, or the default for the key sources.
func (j JWT) AllowedAlgorithms() []string {
	if len(j.Algorithms) > 0 {
		return j.Algorithms
	}
	var out []string
	if j.SecretFile != "" {
		out = append(out, HMACAlgorithms...)
	}
	if j.PublicKeyFile != "" || j.JWKSURL != "" {
		out = append(out, PublicKeyAlgorithms...)
	}
	return out
}

func (j JWT) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: "auth.jwt." + key, Msg: fmt.Sprintf(format, args...)})
	}
	if j.JWKSURL != "" {
		u, err := url.Parse(j.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("jwks_url", "must be an http:// or https:// URL (got %q)", j.JWKSURL)
		}
	}
	if j.JWKSRefreshInterval != 0 && j.JWKSRefreshInterval < time.Second {
		bad("jwks_refresh_interval", "must be at least 1s (got %s)", j.JWKSRefreshInterval)
	}
	if j.JWKSMinRefreshInterval < 0 {
		bad("jwks_min_refresh_interval", "must be >= 0 (got %s)", j.JWKSMinRefreshInterval)
	}
	if j.Leeway < 0 || j.Leeway > 10*time.Minute {
		bad("leeway", "must be between 0 and 10m (got %s)", j.Leeway)
	}
	for i, a := range j.Algorithms {
		switch {
		case slices.Contains(HMACAlgorithms, a):
			if j.SecretFile == "" {
				bad(fmt.Sprintf("algorithms[%d]", i), "%s needs auth.jwt.secret_file", a)
			}
		case slices.Contains(PublicKeyAlgorithms, a):
			if j.PublicKeyFile == "" && j.JWKSURL == "" {
				bad(fmt.Sprintf("algorithms[%d]", i), "%s needs auth.jwt.public_key_file or auth.jwt.jwks_url", a)
			}
		default:
			bad(fmt.Sprintf("algorithms[%d]", i), "must be one of %s (got %q)",
				strings.Join(append(slices.Clone(HMACAlgorithms), PublicKeyAlgorithms...), ", "), a)
		}
	}
	if j.Cookie != "" && strings.ContainsAny(j.Cookie, " \t\r\n;=,") {
		bad("cookie", "%q is not a cookie name", j.Cookie)
	}
	if !j.Enabled() && (j.QueryParam || j.Cookie != "" || len(j.Algorithms) > 0) {
		bad("secret_file", "token options are set but no key source: set secret_file, public_key_file or jwks_url")
	}
	return errs
}
