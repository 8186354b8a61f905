// Package app is the example browser application's server side: it serves
// a page with no build step and a token endpoint that signs short-lived
// tokens for Starling's auth.jwt (HS256 with a shared secret file). A real
// application issues tokens only to users it has logged in; this example
// gives one to anyone who asks, so run it on loopback only.
package app

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/starling-mqtt/starling/web/dashboard"
)

//go:embed static
var static embed.FS

// Config is what the example server needs.
type Config struct {
	// Secret is the HS256 secret, the same bytes as the broker's
	// auth.jwt.secret_file.
	Secret []byte
	// Broker is the WebSocket URL the page connects to
	// (ws://127.0.0.1:8080/mqtt).
	Broker string
	// TTL is how long a token lasts (5 minutes when 0). The page
	// reconnects with a fresh token when the broker ends the connection
	// at the token's exp.
	TTL time.Duration
	// Audience, when set, goes in the token's aud (auth.jwt.audience).
	Audience string
}

// Handler serves the page at /, MQTT.js (the dashboard's vendored copy) at
// /mqtt.min.js and tokens at /token.
func Handler(cfg Config) http.Handler {
	if cfg.TTL == 0 {
		cfg.TTL = 5 * time.Minute
	}
	sub, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServerFS(sub))
	mux.HandleFunc("/mqtt.min.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, dashboard.Files, "vendor/mqtt.min.js")
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		tok, user, err := cfg.token(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(map[string]string{"token": tok, "user": user, "broker": cfg.Broker})
	})
	return mux
}

// token signs a token for a made-up user: it may subscribe to the sensor
// tree and publish commands under its own name. ?ttl=SECONDS (between
// -3600 and 3600) changes the lifetime, to try expiry and refusal.
func (cfg Config) token(r *http.Request) (string, string, error) {
	ttl := cfg.TTL
	if s := r.URL.Query().Get("ttl"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < -3600 || n > 3600 {
			return "", "", fmt.Errorf("ttl must be seconds between -3600 and 3600")
		}
		ttl = time.Duration(n) * time.Second
	}
	b := make([]byte, 4)
	rand.Read(b)
	user := "viewer-" + hex.EncodeToString(b)
	now := time.Now()
	claims := jwt.MapClaims{
		"sub":            user,
		"iat":            now.Unix(),
		"exp":            now.Add(ttl).Unix(),
		"mqtt_subscribe": []string{"sensors/#"},
		"mqtt_publish":   []string{"commands/%u/#"},
	}
	if cfg.Audience != "" {
		claims["aud"] = cfg.Audience
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(cfg.Secret)
	return tok, user, err
}
