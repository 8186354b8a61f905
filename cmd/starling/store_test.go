package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/pebble"
)

// fillStore writes two sessions (one with a will), subscriptions, outbound
// and inbound records, a message and two retained messages.
func fillStore(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := pebble.Open(dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	pf := byte(1)
	b := s.NewBatch()
	b.PutSession(&store.Session{ClientID: "sensor 1", Version: 5, ExpiryInterval: 3600,
		DisconnectedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Will:           &store.Will{Message: store.Message{Topic: "will/t", Payload: []byte("bye"), QoS: 1}, Delay: 5 * time.Second}})
	b.PutSession(&store.Session{ClientID: "dashboard", Version: 4, ExpiryInterval: 0xFFFFFFFF})
	b.PutSubscription("sensor 1", &store.Subscription{Filter: "cmd/#", Options: packet.Subscription{Filter: "cmd/#", QoS: 1}})
	b.PutSubscription("sensor 1", &store.Subscription{Filter: "cfg/+", Options: packet.Subscription{Filter: "cfg/+", QoS: 2, NoLocal: true}, ID: 7})
	b.PutSubscription("dashboard", &store.Subscription{Filter: "#", Options: packet.Subscription{Filter: "#"}})
	b.PutMessage(42, &store.Message{Topic: "cmd/reboot", Payload: []byte{0, 1, 2, 0xff}, QoS: 1,
		Props: packet.Properties{PayloadFormat: &pf, UserProperties: []packet.UserProperty{{Key: "k", Value: "v"}}}})
	b.PutOutbound("sensor 1", 1, &store.Outbound{MessageID: 42, QoS: 1, PacketID: 9, State: store.WaitPuback, SubIDs: []int{7}})
	b.PutOutbound("sensor 1", 2, &store.Outbound{MessageID: 42, QoS: 1})
	b.PutInbound("dashboard", 17)
	b.PutRetained(&store.Message{Topic: "status/sensor-1", Payload: []byte("online"), QoS: 1, Retain: true})
	b.PutRetained(&store.Message{Topic: "status/big", Payload: make([]byte, 1000), Retain: true,
		Expiry: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	return s
}

func runStoreTest(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = runStoreTo(args, &o, &e)
	return code, o.String(), e.String()
}

func TestStoreCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := fillStore(t, dir)

	// While the store is open (a running broker), the command refuses.
	code, _, stderr := runStoreTest("sessions", "-data", dir)
	if code != 1 || !strings.Contains(stderr, "in use by a running broker") || !strings.Contains(stderr, "Stop the broker first") {
		t.Errorf("on a held folder: code %d, stderr %q", code, stderr)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := runStoreTest("sessions", "-data", dir)
	if code != 0 {
		t.Fatalf("sessions: code %d, %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CLIENT ID") {
		t.Fatalf("sessions output:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) < 5 || f[0] != "dashboard" || f[1] != "never" || f[len(f)-2] != "1" || f[len(f)-1] != "0" {
		t.Errorf("dashboard line %q", lines[1])
	}
	if f := strings.Fields(lines[2]); strings.Join(f, " ") != `"sensor 1" 1h0m0s 2026-01-02T03:04:05Z 2 2` {
		t.Errorf("sensor line %q", lines[2])
	}

	code, out, _ = runStoreTest("retained", "-data", dir)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("retained: code %d\n%s", code, out)
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "status/big 0 1000 2030-01-01T00:00:00Z" {
		t.Errorf("retained line %q", lines[1])
	}
	if f := strings.Fields(lines[2]); strings.Join(f, " ") != "status/sensor-1 1 6 never" {
		t.Errorf("retained line %q", lines[2])
	}

	code, out, _ = runStoreTest("export", "-data", dir)
	if code != 0 {
		t.Fatalf("export: code %d", code)
	}
	kinds := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		kinds[rec["kind"].(string)]++
		if rec["kind"] == "message" {
			var m struct {
				ID             uint64
				Payload        []byte
				UserProperties []struct{ Key, Value string } `json:"user_properties"`
			}
			json.Unmarshal(sc.Bytes(), &m)
			if m.ID != 42 || !bytes.Equal(m.Payload, []byte{0, 1, 2, 0xff}) || len(m.UserProperties) != 1 {
				t.Errorf("message line %s", sc.Text())
			}
		}
		if rec["kind"] == "session" && rec["client_id"] == "sensor 1" {
			will, _ := rec["will"].(map[string]any)
			if will == nil || will["payload"] != "Ynll" || will["delay_seconds"] != 5.0 { // base64("bye")
				t.Errorf("session line %s", sc.Text())
			}
		}
	}
	want := map[string]int{"session": 2, "message": 1, "subscription": 3, "outbound": 2, "inbound": 1, "retained": 2}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("export: %d %s lines, want %d\n%s", kinds[k], k, n, out)
		}
	}

	// The command never writes: the store opens again unchanged.
	s, err := pebble.Open(dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestStoreCommandErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing")
	code, _, stderr := runStoreTest("sessions", "-data", missing)
	if code != 1 || !strings.Contains(stderr, "holds no Starling store") {
		t.Errorf("missing folder: code %d, %q", code, stderr)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("the command created the folder")
	}
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "x.txt"), nil, 0o600)
	code, _, stderr = runStoreTest("retained", "-data", foreign)
	if code != 1 || !strings.Contains(stderr, "not a Starling data folder") {
		t.Errorf("foreign folder: code %d, %q", code, stderr)
	}
	if code, _, stderr = runStoreTest("bogus"); code != 2 || !strings.Contains(stderr, `unknown command "bogus"`) {
		t.Errorf("unknown command: code %d, %q", code, stderr)
	}
	if code, _, _ = runStoreTest(); code != 2 {
		t.Errorf("no command: code %d", code)
	}
	if code, _, _ = runStoreTest("sessions", "extra"); code != 2 {
		t.Errorf("extra argument: code %d", code)
	}
}
