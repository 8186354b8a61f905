package auth

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckAdmin(t *testing.T) {
	dir := t.TempDir()
	h1, _ := HashPassword([]byte("root-pw"), DefaultArgon2)
	h2, _ := HashPassword([]byte("user-pw"), DefaultArgon2)
	pw := filepath.Join(dir, "passwd")
	os.WriteFile(pw, []byte("root:"+h1+"\nuser:"+h2+"\n"), 0o600)
	cfg := DefaultConfig()
	cfg.PasswordFile = pw
	cfg.Superusers = []string{"root"}
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		user, pass string
		want       bool
	}{{"root", "root-pw", true}, {"root", "nope", false}, {"user", "user-pw", false}, {"ghost", "x", false}}
	for _, c := range cases {
		if got := a.CheckAdmin(c.user, c.pass); got != c.want {
			t.Errorf("CheckAdmin(%q, %q) = %v, want %v", c.user, c.pass, got, c.want)
		}
	}
}
