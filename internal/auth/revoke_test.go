package auth

import (
	"context"
	"testing"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// A password login stays valid across a reload while its user's hash is
// unchanged, and not once the user is deleted or the hash replaced.
func TestStillValid(t *testing.T) {
	dir := t.TempDir()
	alice, bob := mustHash(t, "a"), mustHash(t, "b")
	pf := writeFile(t, dir, "passwd", "alice:"+alice+"\nbob:"+bob+"\ncarol:"+mustHash(t, "c")+"\n")
	a, _ := newAuth(t, Config{PasswordFile: pf, AllowAnonymous: true})
	login := func(user, pw string) *broker.ClientInfo {
		t.Helper()
		id, code, err := a.Authenticate(context.Background(), &broker.ConnectInfo{ClientID: user, Username: user, HasUsername: true,
			Password: []byte(pw), HasPassword: true})
		if err != nil || code != packet.Success {
			t.Fatalf("login %s: 0x%02X %v", user, code, err)
		}
		return &broker.ClientInfo{ClientID: user, Identity: id}
	}
	ca, cb, cc := login("alice", "a"), login("bob", "b"), login("carol", "c")
	anon := &broker.ClientInfo{ClientID: "x", Identity: broker.Identity{Anonymous: true}}
	for _, c := range []*broker.ClientInfo{ca, cb, cc, anon} {
		if !a.StillValid(c) {
			t.Fatalf("%s not valid before any change", c.ClientID)
		}
	}
	writeFile(t, dir, "passwd", "alice:"+alice+"\nbob:"+mustHash(t, "b")+"\n") // bob re-hashed, carol deleted
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	for c, want := range map[*broker.ClientInfo]bool{ca: true, cb: false, cc: false, anon: true} {
		if got := a.StillValid(c); got != want {
			t.Errorf("%s after the reload: StillValid %v, want %v", c.ClientID, got, want)
		}
	}
}
