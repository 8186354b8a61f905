package integration

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/golang-jwt/jwt/v5"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

var jwtSecret = []byte(strings.Repeat("integration-secret-", 3))

// jwtToken signs an HS256 token for user, valid for ttl, with extra claims.
func jwtToken(t *testing.T, user string, ttl time.Duration, extra jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": user, "exp": time.Now().Add(ttl).Unix(), "iss": "test-issuer", "aud": "starling"}
	for k, v := range extra {
		c[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(jwtSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startJWTBroker runs a broker that only lets clients with tokens in.
func startJWTBroker(t *testing.T, mutate func(*starling.Config)) (*starling.Server, string) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "jwt.secret")
	writeFile(t, secret, string(jwtSecret)+"\n")
	return testutil.StartBroker(t, func(c *starling.Config) {
		c.Auth.AllowAnonymous = false
		c.Auth.JWT.SecretFile = secret
		c.Auth.JWT.Issuer, c.Auth.JWT.Audience = "test-issuer", "starling"
		c.Auth.JWT.Leeway = 0
		if mutate != nil {
			mutate(c)
		}
	})
}

func tokenConnect(token string) *paho.Connect {
	// 3.1.1 needs a user name with a password; MQTT 5 does not. The user
	// name is ignored: the token's sub is the user.
	return &paho.Connect{CleanStart: true, KeepAlive: 30, UsernameFlag: true, Username: "ignored", PasswordFlag: true, Password: []byte(token)}
}

// A paho.golang client connects with a token as its password; a bad
// signature, an expired token, a wrong audience and a plain password are
// refused with 0x86.
func TestJWTConnect(t *testing.T) {
	t.Parallel()
	_, addr := startJWTBroker(t, nil)
	c, ack := dialV5(t, addr, "tok-ok", tokenConnect(jwtToken(t, "alice", time.Hour, nil)))
	if c == nil || ack.ReasonCode != 0 {
		t.Fatalf("good token: CONNACK %+v", ack)
	}
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
		"iss": "test-issuer", "aud": "starling"}).SignedString([]byte(strings.Repeat("x", 40)))
	for name, tok := range map[string]string{
		"forged":         forged,
		"expired":        jwtToken(t, "alice", -time.Minute, nil),
		"wrong audience": jwtToken(t, "alice", time.Hour, jwt.MapClaims{"aud": "other"}),
		"not a token":    "hunter2",
	} {
		c, ack := dialV5(t, addr, "tok-bad", tokenConnect(tok))
		if c != nil || ack == nil || ack.ReasonCode != byte(packet.BadUsernameOrPassword) {
			t.Errorf("%s: CONNACK %+v, want 0x86", name, ack)
		}
	}
}

// The token's topic lists, with %u, limit what the client may do, ANDed
// with the ACL file: a topic needs both.
func TestJWTPermissions(t *testing.T) {
	t.Parallel()
	acl := filepath.Join(t.TempDir(), "acl")
	writeFile(t, acl, "allow all any devices/#\nallow all any news/#\n")
	_, addr := startJWTBroker(t, func(c *starling.Config) {
		c.Auth.ACLFile = acl
		c.Auth.JWT.PublishClaim, c.Auth.JWT.SubscribeClaim = "pub", "sub_topics"
	})
	tok := jwtToken(t, "dev7", time.Hour, jwt.MapClaims{"pub": []string{"devices/%u/#", "cmd/#"}, "sub_topics": []string{"devices/%u/#"}})
	c, ack := dialV5(t, addr, "dev7-client", tokenConnect(tok))
	if c == nil {
		t.Fatalf("CONNACK %+v", ack)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// paho reports refused filters as an error; the SUBACK says which.
	sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev7/#", QoS: 1},
		{Topic: "devices/dev8/#", QoS: 1}, {Topic: "news/#", QoS: 1}}})
	if sa == nil {
		t.Fatal("no SUBACK")
	}
	if want := []byte{1, 0x87, 0x87}; string(sa.Reasons) != string(want) {
		t.Fatalf("SUBACK %x, want %x (own tree; another device's: token denies; news: ACL allows, token does not)", sa.Reasons, want)
	}
	for _, tc := range []struct {
		topic string
		code  byte
	}{
		{"devices/dev7/temp", 0},    // both allow
		{"devices/dev8/temp", 0x87}, // ACL allows, token does not
		{"cmd/reboot", 0x87},        // token allows, ACL does not
	} {
		r, err := c.Publish(ctx, &paho.Publish{Topic: tc.topic, QoS: 1, Payload: []byte("x")})
		if r == nil {
			t.Fatalf("publish %s: no PUBACK: %v", tc.topic, err)
		}
		if r.ReasonCode != tc.code {
			t.Errorf("publish %s: 0x%02x, want 0x%02x", tc.topic, r.ReasonCode, tc.code)
		}
	}
	if p := c.expect(t); p.Topic != "devices/dev7/temp" {
		t.Fatalf("got %s", p.Topic)
	}
}

// expWait is how long to wait for a token of ttl to end the connection:
// its lifetime (exp has one-second resolution) plus a margin for a slow
// -race run.
func expWait(ttl time.Duration) time.Duration { return ttl + time.Second + 30*time.Second }

// At exp the broker disconnects an MQTT 5 client with 0xA0 (maximum connect
// time) and closes a 3.1.1 client's connection.
func TestJWTExpiryDisconnects(t *testing.T) {
	t.Parallel()
	_, addr := startJWTBroker(t, nil)
	const ttl = 2 * time.Second
	c, ack := dialV5(t, addr, "short-v5", tokenConnect(jwtToken(t, "alice", ttl, nil)))
	if c == nil {
		t.Fatalf("CONNACK %+v", ack)
	}
	r := testutil.Dial(t, addr, packet.V311)
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "short-v3", KeepAlive: 30,
		HasUsername: true, Username: "x", HasPassword: true, Password: []byte(jwtToken(t, "bob", ttl, nil))})
	if a, ok := r.Read().(*packet.Connack); !ok || a.ReasonCode != 0 {
		t.Fatalf("3.1.1 CONNACK %+v", a)
	}
	select {
	case d := <-c.disc:
		if d.ReasonCode != byte(packet.MaximumConnectTime) {
			t.Fatalf("DISCONNECT 0x%02x, want 0xA0", d.ReasonCode)
		}
	case <-time.After(expWait(ttl)):
		t.Fatal("MQTT 5 client not disconnected at exp")
	}
	if _, err := r.Next(expWait(ttl)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("3.1.1 connection not closed at exp: %v", err)
	}
}

// An MQTT 5 client that logged in with the JWT method extends its session
// with a fresh token in AUTH 0x19: it outlives the first token's exp. A
// token for another user ends the connection with 0x87.
func TestJWTReauthentication(t *testing.T) {
	t.Parallel()
	_, addr := startJWTBroker(t, nil)
	const ttl = 2 * time.Second
	r := testutil.Dial(t, addr, packet.V5)
	first := time.Now()
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "reauth", KeepAlive: 30,
		Properties: packet.Properties{AuthMethod: auth.MethodJWT, AuthData: []byte(jwtToken(t, "alice", ttl, nil))}})
	ack, ok := r.Read().(*packet.Connack)
	if !ok || ack.ReasonCode != 0 || ack.Properties.AuthMethod != auth.MethodJWT {
		t.Fatalf("CONNACK %+v", ack)
	}
	r.Send(&packet.Auth{ReasonCode: packet.ReAuthenticate, Properties: packet.Properties{AuthMethod: auth.MethodJWT,
		AuthData: []byte(jwtToken(t, "alice", time.Hour, nil))}})
	if a, ok := r.Read().(*packet.Auth); !ok || a.ReasonCode != packet.Success {
		t.Fatalf("re-authentication answer %+v", a)
	}
	// Past the first token's exp (whole seconds), the connection still works.
	time.Sleep(time.Until(first.Add(ttl + time.Second)))
	r.Send(&packet.Pingreq{})
	if p, ok := r.Read().(*packet.Pingresp); !ok {
		t.Fatalf("after the first token's exp: %T, want PINGRESP", p)
	}
	r.Send(&packet.Auth{ReasonCode: packet.ReAuthenticate, Properties: packet.Properties{AuthMethod: auth.MethodJWT,
		AuthData: []byte(jwtToken(t, "mallory", time.Hour, nil))}})
	if d := r.ExpectClosed(packet.NotAuthorized); d == nil {
		t.Fatal("re-authentication as another user: no DISCONNECT 0x87")
	}
}

// Over WebSocket, with auth.jwt.query_param on, a CONNECT without a
// password uses the access_token of the URL; without it the same client is
// anonymous and refused.
func TestJWTWebSocketQueryParam(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		srv, _ := startJWTBroker(t, func(c *starling.Config) { c.Auth.JWT.QueryParam = on })
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		wsc, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt?access_token="+jwtToken(t, "browser", time.Hour, nil), "mqtt", nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		r := testutil.NewRaw(t, wsc, packet.V5)
		r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "page", KeepAlive: 30})
		ack, ok := r.Read().(*packet.Connack)
		want := packet.Success
		if !on {
			want = packet.NotAuthorized
		}
		if !ok || ack.ReasonCode != want {
			t.Errorf("query_param %v: CONNACK %+v, want 0x%02x", on, ack, byte(want))
		}
		r.Close()
	}
}

// With auth.jwt.cookie set, a CONNECT without a password uses the cookie of
// the upgrade request; a CONNECT password, when given, wins over it.
func TestJWTWebSocketCookie(t *testing.T) {
	t.Parallel()
	srv, _ := startJWTBroker(t, func(c *starling.Config) { c.Auth.JWT.Cookie = "mqtt_token" })
	dial := func(cookie string) *testutil.Raw {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		wsc, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", "mqtt", http.Header{"Cookie": {"mqtt_token=" + cookie}})
		if err != nil {
			t.Fatal(err)
		}
		r := testutil.NewRaw(t, wsc, packet.V5)
		t.Cleanup(r.Close)
		return r
	}
	for _, tc := range []struct {
		name, cookie, password string
		want                   packet.ReasonCode
	}{
		{"cookie", jwtToken(t, "browser", time.Hour, nil), "", packet.Success},
		{"expired cookie", jwtToken(t, "browser", -time.Hour, nil), "", packet.BadUsernameOrPassword},
		{"password wins", jwtToken(t, "browser", time.Hour, nil), jwtToken(t, "browser", -time.Hour, nil), packet.BadUsernameOrPassword},
	} {
		r := dial(tc.cookie)
		cp := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "page", KeepAlive: 30}
		if tc.password != "" {
			cp.HasPassword, cp.Password = true, []byte(tc.password)
		}
		r.Send(cp)
		if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != tc.want {
			t.Errorf("%s: CONNACK %+v, want 0x%02x", tc.name, ack, byte(tc.want))
		}
	}
}
