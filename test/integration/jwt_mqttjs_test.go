package integration

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/starling-mqtt/starling"
)

// MQTT.js over WebSocket as a browser page uses it: the token in the URL's
// access_token, no password; a good token connects and exchanges a
// message, a forged one gets 0x86, a short-lived one DISCONNECT 0xA0 at exp
// (test/node/token.mjs).
func TestJWTMQTTJS(t *testing.T) {
	t.Parallel()
	node := needNode(t)
	srv, _ := startJWTBroker(t, func(c *starling.Config) {
		c.Auth.JWT.QueryParam = true
		c.Auth.JWT.PublishClaim, c.Auth.JWT.SubscribeClaim = "pub", "subs"
	})
	_, port, err := net.SplitHostPort(srv.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	perms := jwt.MapClaims{"pub": []string{"pages/%u/#"}, "subs": []string{"pages/%u/#"}}
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "page-user", "exp": time.Now().Add(time.Hour).Unix(),
		"iss": "test-issuer", "aud": "starling"}).SignedString([]byte(strings.Repeat("y", 40)))
	runNodeEnv(t, []string{
		"GOOD_TOKEN=" + jwtToken(t, "page-user", time.Hour, perms),
		"BAD_TOKEN=" + forged,
		// The script connects with it first, and waits on its DISCONNECT
		// after the other checks.
		"SHORT_TOKEN=" + jwtToken(t, "page-user", 15*time.Second, perms),
	}, 120*time.Second, node, "token.mjs", port)
}
