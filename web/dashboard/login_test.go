package dashboard

import (
	"strings"
	"testing"
)

// The login box says what "admin" means, which was only in a code
// comment: a password-file user listed in auth.superusers.
func TestLoginExplainsAdmins(t *testing.T) {
	page, err := Files.ReadFile("index.html")
	if err != nil {
		t.Fatal(err)
	}
	s := string(page)
	start, end := strings.Index(s, `<form id="login-form"`), strings.Index(s, `</form>`)
	if start < 0 || end < start {
		t.Fatal("index.html: no login form")
	}
	login := s[start:end]
	for _, want := range []string{"auth.password_file", "auth.superusers", "starling passwd", "docs/observability.md#the-dashboard"} {
		if !strings.Contains(login, want) {
			t.Errorf("the login box does not mention %s", want)
		}
	}
}
