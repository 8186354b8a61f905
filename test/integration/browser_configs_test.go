package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth/httpauth"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// The three configurations of docs/security.md "Browser clients" (HS256,
// JWKS, HTTP hook) work as written: each, with its file paths and URLs
// pointed at files and loopback servers made here, starts a broker that a
// page of https://app.example.com reaches over wss with its credential,
// and that refuses a bad one with 0x86.
func TestSecurityDocBrowserConfigs(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	start := strings.Index(text, "\n## Browser clients\n")
	end := strings.Index(text, "\n### Refusals a developer can see\n")
	if start < 0 || end < start {
		t.Fatal(`docs/security.md: no "Browser clients" section followed by "Refusals a developer can see"`)
	}
	blocks := regexp.MustCompile("(?ms)^```yaml\n(.*?)^```\n").FindAllStringSubmatch(text[start:end], -1)
	if len(blocks) != 3 {
		t.Fatalf("Browser clients: %d yaml blocks, want 3 (HS256, JWKS, HTTP hook)", len(blocks))
	}

	pki := newTestPKI(t)
	secretFile := filepath.Join(t.TempDir(), "jwt.secret")
	secret := []byte(strings.Repeat("doc-secret-", 4))
	writeFile(t, secretFile, string(secret)+"\n")

	// The identity provider's JWKS, one ES256 key.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwk := map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
		"x": b64(key.X.FillBytes(make([]byte, 32))), "y": b64(key.Y.FillBytes(make([]byte, 32)))}}}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(jwk) }))
	defer jwks.Close()

	// The app's backend: session "session-123" is alice's.
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req httpauth.Request
		json.NewDecoder(r.Body).Decode(&req)
		if u, p, _ := r.BasicAuth(); u != "broker" || p != "S3cret" || req.Password != "session-123" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(httpauth.Answer{Result: httpauth.Allow, Username: "alice"})
	}))
	defer backend.Close()

	sign := func(m jwt.SigningMethod, k any, kid string, claims jwt.MapClaims) string {
		tok := jwt.NewWithClaims(m, claims)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	creds := []struct{ name, good, bad string }{
		{"HS256",
			sign(jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"sub": "alice", "aud": "starling", "exp": exp, "mqtt_pub": []string{"x"}, "mqtt_sub": []string{"x"}}),
			sign(jwt.SigningMethodHS256, []byte(strings.Repeat("z", 40)), "", jwt.MapClaims{"sub": "alice", "aud": "starling", "exp": exp})},
		{"JWKS",
			sign(jwt.SigningMethodES256, key, "k1", jwt.MapClaims{"sub": "alice", "aud": "starling", "iss": "https://login.example.com/", "exp": exp}),
			sign(jwt.SigningMethodES256, key, "k1", jwt.MapClaims{"sub": "alice", "aud": "other", "iss": "https://login.example.com/", "exp": exp})},
		{"HTTP hook", "session-123", "session-999"},
	}
	roots := x509.NewCertPool()
	roots.AddCert(pki.cert)
	for i, b := range blocks {
		c := creds[i]
		t.Run(c.name, func(t *testing.T) {
			y := strings.NewReplacer(
				`https: ":443"`, `https: "127.0.0.1:0"`,
				"/etc/starling/tls/server.pem", pki.CertFile,
				"/etc/starling/tls/server.key", pki.KeyFile,
				"/etc/starling/jwt.secret", secretFile,
				"https://login.example.com/.well-known/jwks.json", jwks.URL,
				"https://broker:S3cret@app.example.com/mqtt-auth", strings.Replace(backend.URL, "http://", "http://broker:S3cret@", 1)+"/mqtt-auth",
			).Replace(b[1])
			cfg, err := config.Parse([]byte(y))
			if err != nil {
				t.Fatalf("%s:\n%s", err, y)
			}
			cfg.TCP, cfg.HTTP, cfg.Data, cfg.Store = "127.0.0.1:0", "", t.TempDir(), "memory"
			cfg.ShutdownTimeout = 2 * time.Second
			srv, err := starling.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve() }()
			if srv.HTTPSAddr() == nil {
				t.Fatalf("serve: %v", <-errc)
			}
			defer func() { srv.Close(); <-errc }()
			for _, tc := range []struct {
				cred string
				want packet.ReasonCode
			}{{c.good, packet.Success}, {c.bad, packet.BadUsernameOrPassword}} {
				ctx, cancel := context.WithTimeout(t.Context(), testutil.Patience(t))
				wsc, err := transport.DialWSConfig(ctx, "wss://"+srv.HTTPSAddr().String()+"/mqtt", transport.WSDialConfig{Subprotocol: "mqtt",
					Header: http.Header{"Origin": {"https://app.example.com"}}, TLSConfig: &tls.Config{RootCAs: roots}})
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				r := testutil.NewRaw(t, wsc, packet.V5)
				r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "page", KeepAlive: 30,
					HasUsername: true, Username: "web", HasPassword: true, Password: []byte(tc.cred)})
				if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != tc.want {
					t.Errorf("CONNACK %+v, want 0x%02x", ack, byte(tc.want))
				}
				r.Close()
			}
		})
	}
}
