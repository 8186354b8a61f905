package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// alicePasswordFile writes a password file with one user, alice, whose
// password "s3cret" is hashed with params, and returns its path.
func alicePasswordFile(t *testing.T, params auth.Argon2Params) string {
	t.Helper()
	hash, err := auth.HashPassword([]byte("s3cret"), params)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, pw, "alice:"+hash+"\n")
	return pw
}

// Passwords, anonymous refusal, ACL allow/deny with substitution, and a
// reload that revokes an existing subscription, through real clients.
func TestAuthPasswordsACLAndReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hash, err := auth.HashPassword([]byte("s3cret"), auth.DefaultArgon2)
	if err != nil {
		t.Fatal(err)
	}
	hash2, _ := auth.HashPassword([]byte("other"), auth.DefaultArgon2)
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	writeFile(t, pw, "alice:"+hash+"\nbob:"+hash2+"\n")
	writeFile(t, acl, "allow all user alice #\nallow all any users/%u/#\nallow subscribe,read user bob news/#\n")
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Auth.AllowAnonymous = false
		c.Auth.PasswordFile = pw
		c.Auth.ACLFile = acl
	})

	connect := func(user, pass string) (*v5Client, *paho.Connack) {
		return dialV5(t, addr, "c-"+user, &paho.Connect{CleanStart: true, KeepAlive: 30,
			Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != ""})
	}
	if c, ack := connect("alice", "wrong"); c != nil || ack == nil || ack.ReasonCode != byte(packet.BadUsernameOrPassword) {
		t.Fatalf("wrong password: client %v ack %+v, want CONNACK 0x86", c != nil, ack)
	}
	if c, ack := connect("", ""); c != nil || ack == nil || ack.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("anonymous: client %v ack %+v, want CONNACK 0x87", c != nil, ack)
	}
	alice, _ := connect("alice", "s3cret")
	bob, _ := connect("bob", "other")

	// %u: bob may use users/bob/#, not users/alice/#.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if sa, _ := bob.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/alice/#", QoS: 1}}}); sa == nil || sa.Reasons[0] != byte(packet.NotAuthorized) {
		t.Fatalf("bob subscribing to alice's tree: %+v, want SUBACK 0x87", sa)
	}
	bob.sub(t, paho.SubscribeOptions{Topic: "users/bob/#", QoS: 1}, paho.SubscribeOptions{Topic: "news/#", QoS: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := bob.Publish(ctx, &paho.Publish{Topic: "news/today", QoS: 1, Payload: []byte("x")}); err == nil || r == nil || r.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("bob publishing news: %v %+v, want PUBACK 0x87", err, r)
	}
	alice.pub(t, &paho.Publish{Topic: "news/today", QoS: 1, Payload: []byte("headline")})
	if m := bob.expect(t); string(m.Payload) != "headline" {
		t.Fatalf("bob got %q", m.Payload)
	}

	// Reload without bob's news rule: his existing subscription stops.
	writeFile(t, acl, "allow all user alice #\nallow all any users/%u/#\n")
	if err := srv.ReloadAuth(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	alice.pub(t, &paho.Publish{Topic: "news/today", QoS: 1, Payload: []byte("after reload")})
	bob.expectNone(t, 300*time.Millisecond)
	alice.pub(t, &paho.Publish{Topic: "users/bob/inbox", QoS: 1, Payload: []byte("still mine")})
	if m := bob.expect(t); string(m.Payload) != "still mine" {
		t.Fatalf("bob got %q", m.Payload)
	}
}
