package auth

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

var tokenSecret = []byte(strings.Repeat("token-secret-", 3))

func signed(t *testing.T, c jwt.MapClaims) string {
	t.Helper()
	if _, ok := c["exp"]; !ok {
		c["exp"] = time.Now().Add(time.Hour).Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(tokenSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tokenAuth(t *testing.T, mutate func(*Config)) (*Auth, *logBuf) {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.AllowAnonymous = false
	cfg.PasswordFile = writeFile(t, dir, "passwd", "alice:"+mustHash(t, "wonderland")+"\n")
	cfg.JWT.SecretFile = writeFile(t, dir, "secret", string(tokenSecret))
	cfg.Superusers = []string{"ops"}
	if mutate != nil {
		mutate(&cfg)
	}
	a, lb := newAuth(t, cfg)
	t.Cleanup(a.Close)
	return a, lb
}

// A JWT-shaped password is a token (the CONNECT user name ignored); other
// passwords still go to the password file; a WebSocket token is used only
// without a password.
func TestTokenLogin(t *testing.T) {
	a, lb := tokenAuth(t, nil)
	ctx := context.Background()
	tok := signed(t, jwt.MapClaims{"sub": "ops"})
	id, code, _ := a.Authenticate(ctx, login("whoever", tok))
	if code != packet.Success || id.Username != "ops" || !id.Superuser || id.Expires.IsZero() || id.Perms != nil {
		t.Fatalf("token login: %+v 0x%02x", id, byte(code))
	}
	if id, code, _ := a.Authenticate(ctx, login("alice", "wonderland")); code != packet.Success || id.Username != "alice" || !id.Expires.IsZero() {
		t.Fatalf("password login beside tokens: %+v 0x%02x", id, byte(code))
	}
	ws := &broker.ConnectInfo{ClientID: "page", Version: 5, Remote: remote, Listener: "http", Token: []byte(tok)}
	if id, code, _ := a.Authenticate(ctx, ws); code != packet.Success || id.Username != "ops" {
		t.Fatalf("WebSocket token: %+v 0x%02x", id, byte(code))
	}
	bad := signed(t, jwt.MapClaims{"sub": "ops", "exp": time.Now().Add(-time.Hour).Unix()})
	if _, code, _ := a.Authenticate(ctx, login("ops", bad)); code != packet.BadUsernameOrPassword {
		t.Fatalf("expired token: 0x%02x", byte(code))
	}
	if !strings.Contains(lb.String(), `reason="token: token expired"`) || strings.Contains(lb.String(), bad) {
		t.Fatalf("audit line should give the reason and never the token:\n%s", lb.String())
	}
	if got := a.AuthMethods(); strings.Join(got, ",") != MethodSCRAMSHA256+","+MethodJWT {
		t.Fatalf("AuthMethods = %q", got)
	}
	step, err := a.StartAuth(ctx, login("", ""), MethodJWT, []byte(tok))
	if err != nil || step.Code != packet.Success || step.Identity.Username != "ops" || step.Next != nil {
		t.Fatalf("JWT method: %+v %v", step, err)
	}
}

func TestTokenClientIDClaim(t *testing.T) {
	a, _ := tokenAuth(t, func(c *Config) { c.JWT.ClientIDClaim = "cid" })
	ci := login("", signed(t, jwt.MapClaims{"sub": "dev", "cid": "c1"}))
	if _, code, _ := a.Authenticate(context.Background(), ci); code != packet.Success {
		t.Fatalf("matching client ID: 0x%02x", byte(code))
	}
	ci = login("", signed(t, jwt.MapClaims{"sub": "dev", "cid": "c2"}))
	if _, code, _ := a.Authenticate(context.Background(), ci); code != packet.ClientIDNotValid {
		t.Fatalf("other client ID: 0x%02x, want 0x85", byte(code))
	}
}

// Token lists: %u and %c substituted; an unconfigured claim does not
// limit; ANDed with the ACL file by the broker (Perms before Allow).
func TestTokenPermissions(t *testing.T) {
	a, lb := tokenAuth(t, func(c *Config) { c.JWT.PublishClaim, c.JWT.SubscribeClaim = "pub", "sub"+"s" })
	tok := signed(t, jwt.MapClaims{"sub": "ops", "pub": []string{"out/%u/%c/#"}, "subs": "in/# $SYS/#"})
	id, code, _ := a.Authenticate(context.Background(), login("", tok))
	if code != packet.Success || id.Perms == nil {
		t.Fatalf("%+v 0x%02x", id, byte(code))
	}
	ci := &broker.ClientInfo{ClientID: "c1", Identity: id}
	for _, tc := range []struct {
		act   broker.Action
		topic string
		want  bool
	}{
		{broker.ActPublish, "out/ops/c1/x", true},
		{broker.ActPublish, "out/ops/c2/x", false},
		{broker.ActPublish, "in/x", false},
		{broker.ActSubscribe, "in/+/temp", true},
		{broker.ActSubscribe, "#", false},
		{broker.ActRead, "in/a", true},
		{broker.ActRead, "$SYS/broker/uptime", true},
		{broker.ActRead, "out/ops/c1/x", false},
	} {
		if got := id.Perms.Allow(ci, tc.act, tc.topic); got != tc.want {
			t.Errorf("Allow(%d, %q) = %v, want %v (superusers too)", tc.act, tc.topic, got, tc.want)
		}
	}
	if !strings.Contains(lb.String(), "by=token") {
		t.Fatalf("no audit line for a token denial:\n%s", lb.String())
	}
	// Only the publish list configured: subscriptions are not limited.
	b, _ := tokenAuth(t, func(c *Config) { c.JWT.PublishClaim = "pub" })
	id, _, _ = b.Authenticate(context.Background(), login("", signed(t, jwt.MapClaims{"sub": "x"})))
	if id.Perms == nil || id.Perms.Allow(ci, broker.ActPublish, "a") || !id.Perms.Allow(ci, broker.ActSubscribe, "#") {
		t.Fatal("a token without the configured publish claim may publish nothing, and subscribe as the ACL says")
	}
	// A pattern that is not a valid filter refuses the login.
	_, code, _ = a.Authenticate(context.Background(), login("", signed(t, jwt.MapClaims{"sub": "x", "pub": []string{"a/#/b"}})))
	if code != packet.NotAuthorized {
		t.Fatalf("bad pattern: 0x%02x, want 0x87", byte(code))
	}
}

// SIGHUP re-reads the token secret: tokens signed with the old one are
// refused after the reload, those with the new one accepted.
func TestTokenSecretReload(t *testing.T) {
	var secretFile string
	a, _ := tokenAuth(t, func(c *Config) { secretFile = c.JWT.SecretFile })
	old := signed(t, jwt.MapClaims{"sub": "dev"})
	if _, code, _ := a.Authenticate(context.Background(), login("", old)); code != packet.Success {
		t.Fatalf("before the reload: 0x%02x", byte(code))
	}
	newSecret := []byte(strings.Repeat("rotated-secret-", 3))
	writeFile(t, filepath.Dir(secretFile), filepath.Base(secretFile), string(newSecret))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, code, _ := a.Authenticate(context.Background(), login("", old)); code != packet.BadUsernameOrPassword {
		t.Fatalf("old secret after the reload: 0x%02x, want 0x86", byte(code))
	}
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "dev", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(newSecret)
	if _, code, _ := a.Authenticate(context.Background(), login("", tok)); code != packet.Success {
		t.Fatalf("new secret after the reload: 0x%02x", byte(code))
	}
	// A secret file made too short: the reload fails and the keys stay.
	writeFile(t, filepath.Dir(secretFile), filepath.Base(secretFile), "short")
	if err := a.Reload(); err == nil {
		t.Fatal("reload with a 5-byte secret succeeded")
	}
	if _, code, _ := a.Authenticate(context.Background(), login("", tok)); code != packet.Success {
		t.Fatalf("after a failed reload: 0x%02x", byte(code))
	}
}
