package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/starling-mqtt/starling/internal/auth/authconfig"
)

var now = time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Minute).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func newVerifier(t *testing.T, cfg authconfig.JWT) *Verifier {
	t.Helper()
	if err := (authconfig.Config{AllowAnonymous: true, JWT: cfg}).Validate(); err != nil {
		t.Fatal(err)
	}
	v, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Now = func() time.Time { return now }
	t.Cleanup(v.Close)
	return v
}

// reason returns the refusal reason of err, "" for nil.
func reason(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *Error", err)
	}
	return e.Reason
}

func TestHMAC(t *testing.T) {
	secret := []byte(strings.Repeat("s3cr3t-", 6))
	cfg := authconfig.DefaultJWT()
	cfg.SecretFile = writeFile(t, "secret", append(secret, '\n'))
	cfg.Algorithms = []string{"HS256", "HS512"}
	cfg.Issuer, cfg.Audience = "https://issuer.test/", "starling"
	cfg.Leeway = 10 * time.Second
	v := newVerifier(t, cfg)
	good := jwt.MapClaims{"iss": "https://issuer.test/", "aud": []string{"other", "starling"}}
	with := func(extra jwt.MapClaims) jwt.MapClaims {
		c := claims(good)
		for k, x := range extra {
			if x == nil {
				delete(c, k)
			} else {
				c[k] = x
			}
		}
		return c
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, with(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	for _, tc := range []struct {
		name, token, want string
	}{
		{"valid", sign(t, jwt.SigningMethodHS256, secret, "", with(nil)), ""},
		{"valid HS512", sign(t, jwt.SigningMethodHS512, secret, "", with(nil)), ""},
		{"expired within leeway", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"exp": now.Add(-5 * time.Second).Unix()})), ""},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"exp": now.Add(-time.Minute).Unix()})), "token expired"},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"exp": nil})), "token lacks a required claim"},
		{"nbf in the future", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"nbf": now.Add(time.Minute).Unix()})), "token not valid yet (nbf)"},
		{"nbf within leeway", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"nbf": now.Add(5 * time.Second).Unix()})), ""},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"iss": "https://evil.test/"})), "wrong token issuer"},
		{"no issuer", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"iss": nil})), "token lacks a required claim"},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"aud": "other"})), "wrong token audience"},
		{"algorithm not allowed", sign(t, jwt.SigningMethodHS384, secret, "", with(nil)), "token algorithm not allowed"},
		{"alg none", none, "token algorithm not allowed"},
		{"other secret", sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), "", with(nil)), "bad token signature"},
		{"no sub", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"sub": nil})), "token has no sub claim (a non-empty string) for the user name"},
		{"bad user name", sign(t, jwt.SigningMethodHS256, secret, "", with(jwt.MapClaims{"sub": "a:b"})), "token user name not usable"},
		{"malformed", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln", "malformed token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tc.token)
			if got := reason(t, err); got != tc.want {
				t.Fatalf("Verify: reason %q (%v), want %q", got, err, tc.want)
			}
			if err == nil && (c.Username != "alice" || c.Expires.IsZero()) {
				t.Fatalf("claims %+v", c)
			}
		})
	}
	c, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, "", with(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(now.Add(time.Minute).Unix(), 0).Add(10 * time.Second); !c.Expires.Equal(want) {
		t.Errorf("Expires = %v, want exp + leeway = %v", c.Expires, want)
	}
}

func TestShortSecretRefused(t *testing.T) {
	cfg := authconfig.DefaultJWT()
	cfg.SecretFile = writeFile(t, "secret", []byte("short\n"))
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "fewer than 32") {
		t.Fatalf("New with a 5-byte secret: %v", err)
	}
}

func TestClaims(t *testing.T) {
	secret := []byte(strings.Repeat("k", 32))
	cfg := authconfig.DefaultJWT()
	cfg.SecretFile = writeFile(t, "secret", secret)
	cfg.UsernameClaim, cfg.ClientIDClaim = "name", "cid"
	cfg.PublishClaim, cfg.SubscribeClaim = "pub", "sub_topics"
	v := newVerifier(t, cfg)
	c, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, "", claims(jwt.MapClaims{
		"name": "bob", "cid": "dev-1", "pub": []string{"cmd/%u/#"}, "sub_topics": "sensors/# status/%c"})))
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "bob" || c.ClientID != "dev-1" || !slices.Equal(c.Publish, []string{"cmd/%u/#"}) ||
		!slices.Equal(c.Subscribe, []string{"sensors/#", "status/%c"}) {
		t.Fatalf("claims %+v", c)
	}
	// Configured claims missing from the token: empty lists (nothing allowed), not nil.
	c, err = v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, "", claims(jwt.MapClaims{"name": "bob", "cid": "x"})))
	if err != nil || c.Publish == nil || len(c.Publish) != 0 || c.Subscribe == nil {
		t.Fatalf("claims %+v, %v", c, err)
	}
	_, err = v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, "", claims(jwt.MapClaims{"name": "bob"})))
	if got := reason(t, err); got != "token has no cid claim for the client ID" {
		t.Fatalf("no cid: %q", got)
	}
	_, err = v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, "", claims(jwt.MapClaims{"name": "bob", "cid": "x", "pub": []any{1}})))
	if got := reason(t, err); got != "token claim pub holds a non-string" {
		t.Fatalf("bad pub: %q", got)
	}
}

func pemPublic(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestPublicKeyFile(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		m    jwt.SigningMethod
		priv crypto.Signer
	}{
		{"RS256", jwt.SigningMethodRS256, rsaKey},
		{"ES256", jwt.SigningMethodES256, ecKey},
		{"EdDSA", jwt.SigningMethodEdDSA, edKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pubPEM := pemPublic(t, tc.priv.Public())
			cfg := authconfig.DefaultJWT()
			cfg.PublicKeyFile = writeFile(t, "key.pem", pubPEM)
			v := newVerifier(t, cfg)
			if _, err := v.Verify(context.Background(), sign(t, tc.m, tc.priv, "", claims(nil))); err != nil {
				t.Fatalf("valid %s token: %v", tc.name, err)
			}
			// The public key used as an HMAC secret (algorithm confusion).
			_, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, pubPEM, "", claims(nil)))
			if got := reason(t, err); got != "token algorithm not allowed" {
				t.Fatalf("HS256 signed with the public key: %q", got)
			}
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if tc.name == "ES256" {
				_, err = v.Verify(context.Background(), sign(t, tc.m, other, "", claims(nil)))
				if got := reason(t, err); got != "bad token signature" {
					t.Fatalf("another key's token: %q", got)
				}
			}
		})
	}
}

// jwksServer serves a JWK Set on 127.0.0.1 that the test changes, counting
// the fetches; down makes it answer 500.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	fetches atomic.Int32
	down    atomic.Bool
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		if s.down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

// publish replaces the served set with these public keys.
func (s *jwksServer) publish(t *testing.T, keys map[string]*ecdsa.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	st := jwkset.NewMemoryStorage()
	for kid, k := range keys {
		j, err := jwkset.NewJWKFromKey(&k.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.AlgES256, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.KeyWrite(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	b, err := st.JSONPublic(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

func TestJWKSRotationAndRateLimit(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k3, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newJWKSServer(t)
	srv.publish(t, map[string]*ecdsa.PrivateKey{"k1": k1})
	cfg := authconfig.DefaultJWT()
	cfg.JWKSURL = srv.URL
	cfg.JWKSMinRefreshInterval = time.Hour // one unknown-kid fetch, then none
	v := newVerifier(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := v.Verify(ctx, sign(t, jwt.SigningMethodES256, k1, "k1", claims(nil))); err != nil {
		t.Fatalf("k1: %v", err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after the first token, want 1 (the start)", n)
	}
	// The issuer rotates to k2: the unknown kid fetches the set again.
	srv.publish(t, map[string]*ecdsa.PrivateKey{"k1": k1, "k2": k2})
	if _, err := v.Verify(ctx, sign(t, jwt.SigningMethodES256, k2, "k2", claims(nil))); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after the rotation, want 2", n)
	}
	// Another unknown kid within the rate limit: refused at once, no fetch.
	srv.publish(t, map[string]*ecdsa.PrivateKey{"k1": k1, "k2": k2, "k3": k3})
	_, err := v.Verify(ctx, sign(t, jwt.SigningMethodES256, k3, "k3", claims(nil)))
	if got := reason(t, err); got != "no key for the token" {
		t.Fatalf("k3 within the rate limit: %q (%v)", got, err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after a rate-limited unknown kid, want 2", n)
	}
	// A kid's key used with a token signed by another key.
	_, err = v.Verify(ctx, sign(t, jwt.SigningMethodES256, k1, "k2", claims(nil)))
	if got := reason(t, err); got != "bad token signature" {
		t.Fatalf("k1 signature under kid k2: %q", got)
	}
}

func TestJWKSOutageKeepsKeys(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newJWKSServer(t)
	srv.publish(t, map[string]*ecdsa.PrivateKey{"k1": k1})
	cfg := authconfig.DefaultJWT()
	cfg.JWKSURL = srv.URL
	cfg.JWKSMinRefreshInterval = 0 // every unknown kid fetches
	v := newVerifier(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tok := sign(t, jwt.SigningMethodES256, k1, "k1", claims(nil))
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("k1: %v", err)
	}
	srv.down.Store(true)
	before := srv.fetches.Load()
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err := v.Verify(ctx, sign(t, jwt.SigningMethodES256, k2, "k2", claims(nil)))
	if got := reason(t, err); got != "no key for the token" {
		t.Fatalf("unknown kid while the JWKS is down: %q", got)
	}
	if srv.fetches.Load() == before {
		t.Fatal("an unknown kid did not try to fetch the JWKS")
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("k1 after a failed fetch: %v (cached keys must be kept)", err)
	}
	srv.Close() // gone altogether
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("k1 with the JWKS server gone: %v", err)
	}
}

func TestJWKSDownAtStart(t *testing.T) {
	srv := newJWKSServer(t)
	srv.down.Store(true)
	cfg := authconfig.DefaultJWT()
	cfg.JWKSURL = srv.URL
	cfg.JWKSMinRefreshInterval = 0
	v := newVerifier(t, cfg) // the broker starts anyway
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv.publish(t, map[string]*ecdsa.PrivateKey{"k1": k1})
	srv.down.Store(false)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := v.Verify(ctx, sign(t, jwt.SigningMethodES256, k1, "k1", claims(nil))); err != nil {
		t.Fatalf("k1 once the JWKS is back: %v", err)
	}
}

func TestLooksLikeToken(t *testing.T) {
	secret := []byte(strings.Repeat("k", 32))
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{sign(t, jwt.SigningMethodHS256, secret, "", claims(nil)), true},
		{"hunter2", false},
		{"a.b.c", false},
		{"eyJmb28iOjF9.e30.sig", false}, // JSON header without alg
		{"", false},
	} {
		if got := LooksLikeToken([]byte(tc.in)); got != tc.want {
			t.Errorf("LooksLikeToken(%q) = %v", tc.in, got)
		}
	}
}
