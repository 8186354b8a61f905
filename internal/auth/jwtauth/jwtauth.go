// Package jwtauth verifies JSON Web Tokens presented by MQTT clients: HMAC
// tokens with a shared secret, RSA, ECDSA and Ed25519 tokens with a public
// key file or a JSON Web Key Set fetched over HTTP (cached, refreshed on a
// schedule and on an unknown kid, rate-limited, kept while the URL fails).
// The JOSE work is github.com/golang-jwt/jwt/v5 and
// github.com/MicahParks/keyfunc/v3; this package only chooses keys and
// reads claims. See docs/security.md, "Tokens (JWT)".
package jwtauth

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/starling-mqtt/starling/internal/auth/authconfig"
)

// MinSecretLen is the shortest HMAC secret accepted (256 bits, as RFC 7518
// section 3.2 asks for HS256).
const MinSecretLen = 32

// maxTokenLen bounds what is parsed; tokens are a few hundred bytes.
const maxTokenLen = 16 << 10

// Claims is what the broker takes from a verified token.
type Claims struct {
	Username string
	// ClientID is the value of client_id_claim ("" when not configured).
	ClientID string
	// Expires is exp plus the leeway: when the client's authority ends.
	Expires time.Time
	// Publish and Subscribe are the topic patterns of publish_claim and
	// subscribe_claim; nil when the claim is not configured. A configured
	// claim missing from the token gives an empty, non-nil list.
	Publish, Subscribe []string
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	cfg    authconfig.JWT
	algs   []string
	secret []byte
	pub    any // public key from public_key_file; nil without one
	jwks   keyfunc.Keyfunc
	cancel context.CancelFunc
	// Now is the clock for exp and nbf (time.Now when nil); tests set it.
	Now func() time.Time
}

// New reads the key files, starts fetching the JWKS (the broker starts
// even when the first fetch fails: the error is logged and the fetch
// retried on the next unknown kid and refresh) and returns the verifier.
// Close stops the refreshes.
func New(cfg authconfig.JWT, log *slog.Logger) (*Verifier, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = "sub"
	}
	if cfg.JWKSRefreshInterval == 0 {
		cfg.JWKSRefreshInterval = time.Hour
	}
	v := &Verifier{cfg: cfg, algs: cfg.AllowedAlgorithms()}
	if f := cfg.SecretFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt.secret_file: %w", err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) < MinSecretLen {
			return nil, fmt.Errorf("auth.jwt.secret_file: %s holds %d bytes, fewer than %d", f, len(b), MinSecretLen)
		}
		v.secret = b
	}
	if f := cfg.PublicKeyFile; f != "" {
		k, err := readPublicKey(f)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt.public_key_file: %w", err)
		}
		v.pub = k
	}
	if u := cfg.JWKSURL; u != "" {
		ctx, cancel := context.WithCancel(context.Background())
		v.cancel = cancel
		min := cfg.JWKSMinRefreshInterval
		limiter := rate.NewLimiter(rate.Inf, 1)
		if min > 0 {
			limiter = rate.NewLimiter(rate.Every(min), 1)
		}
		k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{u}, keyfunc.Override{
			Client:            &http.Client{Timeout: 10 * time.Second},
			HTTPTimeout:       10 * time.Second,
			RefreshInterval:   cfg.JWKSRefreshInterval,
			RefreshUnknownKID: limiter,
			// No wait of its own: a refresh for an unknown kid waits for
			// the limiter only as long as the CONNECT's deadline allows.
			RateLimitWaitMax: -1,
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(_ context.Context, err error) {
					log.Warn("jwks fetch failed; keeping the keys fetched before", "url", u, "err", err)
				}
			},
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("auth.jwt.jwks_url: %w", err)
		}
		v.jwks = k
	}
	return v, nil
}

// Close stops the JWKS refreshes.
func (v *Verifier) Close() {
	if v.cancel != nil {
		v.cancel()
	}
}

func readPublicKey(name string) (any, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", name)
	}
	var k any
	switch blk.Type {
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
			k = c.PublicKey
		}
	default:
		return nil, fmt.Errorf("%s: PEM block %q, want PUBLIC KEY or CERTIFICATE", name, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return k, nil
}

// LooksLikeToken reports whether a password has the shape of a signed JWT
// (three base64url parts, the first a JSON header with "alg"), so that the
// broker checks it as a token rather than against the password file.
func LooksLikeToken(b []byte) bool {
	if len(b) > maxTokenLen || bytes.Count(b, []byte{'.'}) != 2 {
		return false
	}
	head, _, _ := bytes.Cut(b, []byte{'.'})
	dec := make([]byte, base64.RawURLEncoding.DecodedLen(len(head)))
	n, err := base64.RawURLEncoding.Decode(dec, head)
	if err != nil {
		return false
	}
	var h struct {
		Alg *string `json:"alg"`
	}
	return json.Unmarshal(dec[:n], &h) == nil && h.Alg != nil
}

// Error is a refused token; Reason is short and safe to log (it never
// holds the token).
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

func refused(reason string, err error) *Error { return &Error{Reason: reason, Err: err} }

// Verify checks the token's signature with a key allowed for its
// algorithm, its exp (required), nbf, iss and aud with the configured
// leeway, and returns its claims. ctx bounds a JWKS fetch for an unknown
// kid. A refusal is an *Error.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if len(token) > maxTokenLen {
		return nil, refused("token too long", nil)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.algs),
		jwt.WithLeeway(v.cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(now),
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	mc := jwt.MapClaims{}
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, mc, v.keyFunc(ctx))
	if err != nil {
		return nil, classify(err)
	}
	c := &Claims{}
	exp, err := mc.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, refused("token has no usable exp", err)
	}
	c.Expires = exp.Time.Add(v.cfg.Leeway)
	name, ok := mc[v.cfg.UsernameClaim].(string)
	if !ok || name == "" {
		return nil, refused(fmt.Sprintf("token has no %s claim (a non-empty string) for the user name", v.cfg.UsernameClaim), nil)
	}
	if err := authconfig.ValidUsername(name); err != nil {
		return nil, refused("token user name not usable", err)
	}
	c.Username = name
	if k := v.cfg.ClientIDClaim; k != "" {
		id, ok := mc[k].(string)
		if !ok || id == "" {
			return nil, refused(fmt.Sprintf("token has no %s claim for the client ID", k), nil)
		}
		c.ClientID = id
	}
	if c.Publish, err = topics(mc, v.cfg.PublishClaim); err != nil {
		return nil, err
	}
	if c.Subscribe, err = topics(mc, v.cfg.SubscribeClaim); err != nil {
		return nil, err
	}
	return c, nil
}

// topics reads a claim of topic patterns: a list of strings, or one string
// of patterns separated by spaces (as OAuth's scope). nil when claim is "".
func topics(mc jwt.MapClaims, claim string) ([]string, error) {
	if claim == "" {
		return nil, nil
	}
	switch t := mc[claim].(type) {
	case nil:
		return []string{}, nil
	case string:
		return strings.Fields(t), nil
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, refused(fmt.Sprintf("token claim %s holds a non-string", claim), nil)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, refused(fmt.Sprintf("token claim %s is not a list of topics", claim), nil)
}

// keyFunc picks the key for the token's algorithm: the secret for HMAC;
// for the others the JWKS when the token names a kid (or no public key
// file is set), else the public key file. The jwt package then refuses a
// key of the wrong type for the algorithm, so an RS256 public key can never
// serve as an HMAC secret.
func (v *Verifier) keyFunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if slices.Contains(authconfig.HMACAlgorithms, alg) {
			if v.secret == nil {
				return nil, errors.New("no secret_file for HMAC tokens")
			}
			return v.secret, nil
		}
		_, hasKID := t.Header["kid"].(string)
		if v.jwks != nil && (hasKID || v.pub == nil) {
			return v.jwks.KeyfuncCtx(ctx)(t)
		}
		if v.pub != nil {
			return v.pub, nil
		}
		return nil, errors.New("no public key or JWKS for " + alg)
	}
}

// classify turns the jwt package's error into a short reason.
func classify(err error) *Error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refused("malformed token", err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && strings.Contains(err.Error(), "signing method"):
		return refused("token algorithm not allowed", err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return refused("bad token signature", err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return refused("token expired", nil)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return refused("token not valid yet (nbf)", nil)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return refused("wrong token issuer", nil)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refused("wrong token audience", nil)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return refused("token lacks a required claim", err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return refused("no key for the token", err)
	}
	return refused("invalid token", err)
}
