package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// fast are cheap argon2id parameters for tests.
var fast = []string{"-m", "64", "-t", "1", "-p", "1"}

// stdinWith returns a file to read as standard input holding text.
func stdinWith(t *testing.T, text string) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		w.WriteString(text)
		w.Close()
	}()
	t.Cleanup(func() { r.Close() })
	return r
}

// runPasswdWith calls runPasswd with os.Stdin, os.Stdout and os.Stderr
// replaced.
func runPasswdWith(t *testing.T, input string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	oldIn, oldOut, oldErr := os.Stdin, os.Stdout, os.Stderr
	defer func() { os.Stdin, os.Stdout, os.Stderr = oldIn, oldOut, oldErr }()
	os.Stdin = stdinWith(t, input)
	dir := t.TempDir()
	outF, _ := os.Create(filepath.Join(dir, "out"))
	errF, _ := os.Create(filepath.Join(dir, "err"))
	os.Stdout, os.Stderr = outF, errF
	code = runPasswd(args)
	outF.Close()
	errF.Close()
	o, _ := os.ReadFile(outF.Name())
	e, _ := os.ReadFile(errF.Name())
	return code, string(o), string(e)
}

func checkLogin(t *testing.T, file, user, pw string) packet.ReasonCode {
	t.Helper()
	a, err := auth.New(auth.Config{PasswordFile: file}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, code, err := a.Authenticate(context.Background(), &broker.ConnectInfo{ClientID: "c", Username: user,
		HasUsername: true, Password: []byte(pw), HasPassword: true})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func TestPasswdAddChangeDelete(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	// Default parameters once: OWASP m=19456 KiB, t=2, p=1.
	code, out, errOut := runPasswdWith(t, "s3cret\n", file, "alice")
	if code != 0 || !strings.Contains(out, `added user "alice"`) {
		t.Fatalf("add: %d %q %q", code, out, errOut)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new file mode %v, %v", fi.Mode(), err)
	}
	data, _ := os.ReadFile(file)
	if !strings.HasPrefix(string(data), "alice:$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("file: %q", data)
	}
	if checkLogin(t, file, "alice", "s3cret") != packet.Success {
		t.Fatal("added password refused")
	}

	// Comments, other users and the file's mode survive changes.
	os.WriteFile(file, append([]byte("# staff\n"), data...), 0o640)
	os.Chmod(file, 0o640)
	if code, _, e := runPasswdWith(t, "builder\r\n", append(fast, file, "bob")...); code != 0 {
		t.Fatalf("add bob: %d %s", code, e)
	}
	if code, out, e := runPasswdWith(t, "n3w", append(fast, file, "alice")...); code != 0 || !strings.Contains(out, "changed the password") {
		t.Fatalf("change alice: %d %s", code, e)
	}
	data, _ = os.ReadFile(file)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 || lines[0] != "# staff" || !strings.HasPrefix(lines[1], "alice:$argon2id$v=19$m=64,t=1,p=1$") ||
		!strings.HasPrefix(lines[2], "bob:") {
		t.Fatalf("file after changes:\n%s", data)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode changed to %v", fi.Mode())
	}
	if checkLogin(t, file, "alice", "n3w") != packet.Success || checkLogin(t, file, "alice", "s3cret") == packet.Success {
		t.Fatal("change not effective")
	}
	if checkLogin(t, file, "bob", "builder") != packet.Success {
		t.Fatal("CRLF input: password kept its \\r")
	}

	// Delete.
	if code, out, _ := runPasswdWith(t, "", "-d", file, "alice"); code != 0 || !strings.Contains(out, `deleted user "alice"`) {
		t.Fatalf("delete: %d %s", code, out)
	}
	if checkLogin(t, file, "alice", "n3w") == packet.Success {
		t.Fatal("deleted user still logs in")
	}
	if code, _, e := runPasswdWith(t, "", "-d", file, "alice"); code != 1 || !strings.Contains(e, "not in") {
		t.Fatalf("delete missing user: %d %s", code, e)
	}
	entries, _ := os.ReadDir(filepath.Dir(file))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestPasswdErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "passwd")
	for _, tt := range []struct {
		name  string
		input string
		args  []string
		code  int
		msg   string
	}{
		{"no args", "pw\n", nil, 2, "usage"},
		{"one arg", "pw\n", []string{file}, 2, "usage"},
		{"bad user", "pw\n", []string{file, "a:b"}, 2, "contains ':'"},
		{"empty password", "\n", append(fast[:6:6], file, "u"), 1, "empty password"},
		{"no input", "", append(fast[:6:6], file, "u"), 1, "no password"},
		{"too long", strings.Repeat("x", 5000), append(fast[:6:6], file, "u"), 1, "longer than"},
		{"bad cost", "pw\n", []string{"-p", "0", file, "u"}, 2, "-p"},
		{"delete from missing file", "", []string{"-d", file, "u"}, 1, "not in"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := passwd(tt.args, stdinWith(t, tt.input), &out, &errOut)
			if code != tt.code || !strings.Contains(errOut.String(), tt.msg) {
				t.Fatalf("code %d, stderr %q; want %d and %q", code, errOut.String(), tt.code, tt.msg)
			}
			if _, err := os.Stat(file); err == nil {
				t.Fatal("file created on error")
			}
		})
	}
	// A broken file is not rewritten.
	broken := "alice:notahash\n"
	os.WriteFile(file, []byte(broken), 0o600)
	var errOut bytes.Buffer
	if code := passwd(append(fast[:6:6], file, "bob"), stdinWith(t, "pw\n"), &bytes.Buffer{}, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "line 1") {
		t.Fatalf("broken file: %d %s", code, errOut.String())
	}
	if data, _ := os.ReadFile(file); string(data) != broken {
		t.Fatal("broken file changed")
	}
}

func TestPasswdNotATerminal(t *testing.T) {
	// /dev/null is a character device but not a terminal: read, not prompted.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	if _, tty := noEcho(f); tty {
		t.Fatal("/dev/null taken for a terminal")
	}
	var errOut bytes.Buffer
	if code := passwd(append(fast[:6:6], filepath.Join(t.TempDir(), "p"), "u"), f, &bytes.Buffer{}, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "no password") || strings.Contains(errOut.String(), "Password:") {
		t.Fatalf("from /dev/null: %d %q", code, errOut.String())
	}
}
