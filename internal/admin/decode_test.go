package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// decodeJSON answers 413 for a body over its limit, 400 for bad JSON or an
// unknown field, and takes an empty body only where the endpoint allows
// one.
func TestDecodeJSON(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		empty      bool
		ok         bool
		code       int
	}{
		{"valid", `{"level":"warn"}`, false, true, 200},
		{"too large", `{"level":"` + strings.Repeat("x", 100) + `"}`, false, false, http.StatusRequestEntityTooLarge},
		{"unknown field", `{"levle":"warn"}`, false, false, http.StatusBadRequest},
		{"not JSON", `level=warn`, false, false, http.StatusBadRequest},
		{"empty refused", ``, false, false, http.StatusBadRequest},
		{"empty allowed", ``, true, true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			var req struct {
				Level string `json:"level"`
			}
			if ok := decodeJSON(w, r, 64, &req, tc.empty); ok != tc.ok || w.Code != tc.code {
				t.Fatalf("decodeJSON: %v, status %d (%s); want %v, %d", ok, w.Code, w.Body, tc.ok, tc.code)
			}
			if tc.ok && tc.body != "" && req.Level != "warn" {
				t.Fatalf("decoded %+v", req)
			}
		})
	}
}
