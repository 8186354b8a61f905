package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/freeport"
)

// mqttLogin connects a paho.golang client as user; it returns the CONNACK
// reason code and, on success, the client, whose messages arrive on recv.
func mqttLogin(t *testing.T, addr, id, user, pass string, recv chan *paho.Publish) (*paho.Client, byte) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { recv <- pr.Packet; return true, nil }}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true})
	if ack == nil {
		nc.Close()
		t.Fatalf("connect %s: %v", id, err)
	}
	if err != nil {
		nc.Close()
		return nil, ack.ReasonCode
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}); nc.Close() })
	return c, ack.ReasonCode
}

// A real SIGHUP to the starling binary reloads the password file: a new
// user can log in, a changed password applies to the next CONNECT, a
// client connected under the old password is disconnected, and one whose
// entry did not change stays connected and keeps receiving.
func TestSIGHUPReloadsPasswords(t *testing.T) {
	dir := t.TempDir()
	params := auth.Argon2Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	hash := func(pw string) string {
		h, err := auth.HashPassword([]byte(pw), params)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	pwFile := filepath.Join(dir, "passwd")
	write := func(content string) {
		// Replaced whole, as starling passwd does.
		if err := os.WriteFile(pwFile+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(pwFile+".tmp", pwFile); err != nil {
			t.Fatal(err)
		}
	}
	carolHash := hash("carol-pw")
	write("alice:" + hash("old-pw") + "\ncarol:" + carolHash + "\n")
	addr := freeport.Addr(t)
	cfgFile := filepath.Join(dir, "starling.yaml")
	if err := os.WriteFile(cfgFile, []byte("tcp: "+addr+"\nhttp: \"\"\nstore: memory\ndata: "+dir+"\nauth:\n  allow_anonymous: false\n  password_file: "+pwFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, errOut := start(t, "-config", cfgFile)
	defer func() {
		if t.Failed() && cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Logf("stderr:\n%s", errOut)
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("broker never listened")
		}
	}

	got := make(chan *paho.Publish, 10)
	alice, code := mqttLogin(t, addr, "alice-1", "alice", "old-pw", got)
	if code != 0 {
		t.Fatalf("alice: CONNACK 0x%02x", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := alice.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "hup/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	carolGot := make(chan *paho.Publish, 10)
	carol, code := mqttLogin(t, addr, "carol-1", "carol", "carol-pw", carolGot)
	if code != 0 {
		t.Fatalf("carol: CONNACK 0x%02x", code)
	}
	if _, err := carol.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "hup/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, code := mqttLogin(t, addr, "bob-0", "bob", "bob-pw", got); code != 0x86 {
		t.Fatalf("bob before the reload: CONNACK 0x%02x, want 0x86", code)
	}

	write("alice:" + hash("new-pw") + "\nbob:" + hash("bob-pw") + "\ncarol:" + carolHash + "\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The reload is done when bob gets in.
	var bob *paho.Client
	for deadline := time.Now().Add(10 * time.Second); bob == nil; time.Sleep(50 * time.Millisecond) {
		if bob, code = mqttLogin(t, addr, "bob-1", "bob", "bob-pw", got); code != 0 && time.Now().After(deadline) {
			t.Fatalf("bob after SIGHUP: CONNACK 0x%02x, want 0", code)
		}
	}
	if _, code := mqttLogin(t, addr, "alice-2", "alice", "old-pw", got); code != 0x86 {
		t.Fatalf("alice's old password after the reload: CONNACK 0x%02x, want 0x86", code)
	}
	// Alice, connected under her old password, was dropped; carol, whose
	// entry did not change, keeps receiving.
	select {
	case <-alice.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("alice's connection from before SIGHUP, under a changed password, is still open")
	}
	if _, err := bob.Publish(ctx, &paho.Publish{Topic: "hup/x", QoS: 1, Payload: []byte("after reload")}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-carolGot:
		if string(m.Payload) != "after reload" {
			t.Fatalf("carol got %q", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("carol's connection from before SIGHUP no longer receives")
	}
	if cmd.ProcessState != nil {
		t.Fatalf("broker exited on SIGHUP: %v", cmd.ProcessState)
	}
}
