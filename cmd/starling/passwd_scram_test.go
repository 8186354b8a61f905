package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

// -scram stores a $scram-sha-256$ verifier next to argon2id entries; both
// verify plain logins.
func TestPasswdSCRAM(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	if code, _, errs := runPasswdWith(t, "pencil\n", append(fast, file, "ann")...); code != 0 {
		t.Fatalf("argon2id add: %d %s", code, errs)
	}
	if code, _, errs := runPasswdWith(t, "pencil\n", "-scram", "-i", "4096", file, "sam"); code != 0 {
		t.Fatalf("scram add: %d %s", code, errs)
	}
	data, _ := os.ReadFile(file)
	if !strings.Contains(string(data), "sam:$scram-sha-256$4096$") || !strings.Contains(string(data), "ann:$argon2id$") {
		t.Fatalf("file:\n%s", data)
	}
	if c := checkLogin(t, file, "sam", "pencil"); c != packet.Success {
		t.Fatalf("sam: %v", c)
	}
	if c := checkLogin(t, file, "sam", "wrong"); c != packet.BadUsernameOrPassword {
		t.Fatalf("sam wrong: %v", c)
	}
	if code, _, _ := runPasswdWith(t, "pencil\n", "-scram", "-i", "10", file, "sam"); code != 2 {
		t.Fatalf("-i 10: exit %d, want 2", code)
	}
}
