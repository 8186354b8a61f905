package admin

import (
	"encoding/json"
	"testing"
)

// GET /api/v1/bridges answers what Options.Bridges gives, and an empty
// list without bridges; it needs the admin credentials.
func TestAPIBridges(t *testing.T) {
	_, srv, _ := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	if code, body, _ := do(t, srv, "GET", "/api/v1/bridges", creds, ""); code != 200 || body != "[]\n" && body != "[]" {
		t.Errorf("no bridges: %d %q, want 200 []", code, body)
	}
	type st struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
		Queued    int    `json:"queued"`
	}
	_, srv, _ = serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}, Bridges: func() any { return []st{{"cloud", true, 3}} }})
	if code, _, _ := do(t, srv, "GET", "/api/v1/bridges", "", ""); code != 401 {
		t.Errorf("without credentials: %d, want 401", code)
	}
	code, body, _ := do(t, srv, "GET", "/api/v1/bridges", creds, "")
	var got []st
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil || len(got) != 1 || got[0] != (st{"cloud", true, 3}) {
		t.Errorf("GET /api/v1/bridges: %d %s", code, body)
	}
}
