package admin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/web/dashboard"
)

const creds = "admin:s3cret"

func serve(t *testing.T, o Options) (*Admin, *httptest.Server, string) {
	t.Helper()
	b, addr := startBroker(t)
	a := New(b, o)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return a, srv, addr
}

func TestOpenEndpointsWithoutCredentials(t *testing.T) {
	var ready atomic.Bool
	_, srv, addr := serve(t, Options{Ready: ready.Load})
	dial(t, addr, "c1")

	if code, body, _ := do(t, srv, "GET", "/healthz", "", ""); code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, _, _ := do(t, srv, "GET", "/readyz", "", ""); code != 503 {
		t.Errorf("readyz before ready: %d, want 503", code)
	}
	ready.Store(true)
	if code, _, _ := do(t, srv, "GET", "/readyz", "", ""); code != 200 {
		t.Errorf("readyz when ready: %d", code)
	}
	code, body, _ := do(t, srv, "GET", "/metrics", "", "")
	if code != 200 || !strings.Contains(body, "\nmqtt_clients_connected 1\n") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics: %d\n%s", code, body)
	}
	// Without a Checker the API is off, with or without credentials.
	for _, c := range []string{"", creds} {
		code, body, _ = do(t, srv, "GET", "/api/v1/clients", c, "")
		if code != 403 || !strings.Contains(body, "admin API disabled: configure admin credentials") {
			t.Errorf("API without a Checker: %d %s", code, body)
		}
	}
}

func TestAPICredentials(t *testing.T) {
	_, srv, _ := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	for _, c := range []string{"", "admin:wrong", "root:s3cret", ":"} {
		code, body, h := do(t, srv, "GET", "/api/v1/clients", c, "")
		if code != 401 || h.Get("WWW-Authenticate") == "" || !strings.Contains(body, `"error"`) {
			t.Errorf("credentials %q: %d %s %v", c, code, body, h)
		}
	}
	if code, body, _ := do(t, srv, "GET", "/api/v1/clients", creds, ""); code != 200 {
		t.Errorf("good credentials: %d %s", code, body)
	}
	if code, _, _ := do(t, srv, "GET", "/api/v1/nothing", creds, ""); code != 404 {
		t.Errorf("unknown endpoint: %d", code)
	}
	// A script that says so (X-Requested-With, as the dashboard sends)
	// gets the 401 without a challenge: the browser must not put up its
	// password prompt over the page, which shows its own message.
	for _, c := range []string{"", "viewer:pw"} {
		req, err := http.NewRequest("GET", srv.URL+"/api/v1/stats", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Requested-With", "starling-dashboard")
		if c != "" {
			u, p, _ := strings.Cut(c, ":")
			req.SetBasicAuth(u, p)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "" || !strings.Contains(string(b), "admin credentials required") {
			t.Errorf("script request with %q: %d %s %v, want 401 without a challenge", c, resp.StatusCode, b, resp.Header)
		}
	}
	// The open endpoints stay open with a Checker too.
	if code, _, _ := do(t, srv, "GET", "/metrics", "", ""); code != 200 {
		t.Errorf("metrics with a Checker: %d", code)
	}
}

// A page on another origin cannot make a browser that holds the admin
// credentials publish or kick.
func TestAPICrossOrigin(t *testing.T) {
	_, srv, _ := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/publish", strings.NewReader(`{"topic":"x","payload":"y"}`))
	req.SetBasicAuth("admin", "s3cret")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "http://evil.example")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Error string }
	if resp.StatusCode != 403 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
		json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, "cross-origin request refused") {
		t.Errorf("cross-site POST: %d %s %q, want 403 with a JSON error", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// Errors are JSON {"error": ...} with the right status: 405 with Allow
// for a method the path does not take, 404 for no such path, and topic
// errors name their field once.
func TestAPIErrorAnswers(t *testing.T) {
	_, srv, _ := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	for _, c := range []struct {
		method, path, body string
		code               int
		allow, msg         string
	}{
		{"GET", "/api/v1/publish", "", 405, "POST", "method not allowed: use POST"},
		{"PUT", "/api/v1/clients/x", "", 405, "GET, DELETE", "method not allowed: use GET or DELETE"},
		{"PATCH", "/api/v1/trace", "", 405, "GET, POST, DELETE", "method not allowed: use GET or POST or DELETE"},
		{"GET", "/api/v1/nothing", "", 404, "", "no such endpoint"},
		{"POST", "/api/v1/publish", `{"topic":"a/+","payload":"x"}`, 400, "", "topic: wildcard in topic name"},
		{"POST", "/api/v1/publish", `{"topic":"a","payload":"x","response_topic":"r/#"}`, 400, "", "response_topic: wildcard in topic name"},
		{"GET", "/api/v1/retained?filter=a/%23/b", "", 400, "", "filter: '#' not alone in the last level"},
	} {
		code, body, h := do(t, srv, c.method, c.path, creds, c.body)
		var e struct{ Error string }
		if code != c.code || h.Get("Allow") != c.allow || json.Unmarshal([]byte(body), &e) != nil || e.Error != c.msg {
			t.Errorf("%s %s: %d Allow %q %s; want %d Allow %q {\"error\": %q}", c.method, c.path, code, h.Get("Allow"), body, c.code, c.allow, c.msg)
		}
	}
}

func TestClientsAndKick(t *testing.T) {
	_, srv, addr := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	c := dial(t, addr, "dev/1") // a slash in the client ID: escaped in the URL
	c.subscribe(t, "sensors/#")
	dial(t, addr, "other")

	code, body, _ := do(t, srv, "GET", "/api/v1/clients", creds, "")
	var list struct{ Clients []Client }
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil {
		t.Fatalf("clients: %d %v %s", code, err, body)
	}
	if len(list.Clients) != 2 || list.Clients[0].ClientID != "dev/1" || list.Clients[1].ClientID != "other" {
		t.Fatalf("clients: %+v", list.Clients)
	}
	got := list.Clients[0]
	if !got.Connected || got.ProtocolVersion != 5 || got.Remote == "" || len(got.Subscriptions) != 1 ||
		got.Subscriptions[0].Filter != "sensors/#" || got.Subscriptions[0].QoS != 1 {
		t.Errorf("client: %+v", got)
	}

	code, body, _ = do(t, srv, "GET", "/api/v1/clients/dev%2F1", creds, "")
	var one Client
	if err := json.Unmarshal([]byte(body), &one); code != 200 || err != nil || one.ClientID != "dev/1" {
		t.Errorf("one client: %d %v %s", code, err, body)
	}
	if code, _, _ := do(t, srv, "GET", "/api/v1/clients/nobody", creds, ""); code != 404 {
		t.Errorf("unknown client: %d", code)
	}
	if code, _, _ := do(t, srv, "POST", "/api/v1/clients/nobody/kick", creds, ""); code != 404 {
		t.Errorf("kick unknown client: %d", code)
	}

	code, body, _ = do(t, srv, "POST", "/api/v1/clients/dev%2F1/kick", creds, "")
	if code != 200 || !strings.Contains(body, `"kicked": true`) {
		t.Fatalf("kick: %d %s", code, body)
	}
	select {
	case d := <-c.Disc:
		if d.ReasonCode != byte(packet.AdministrativeAction) {
			t.Errorf("DISCONNECT reason 0x%02x, want 0x98", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("kicked client got no DISCONNECT")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body, _ = do(t, srv, "GET", "/api/v1/clients?connected=true", creds, "")
		if !strings.Contains(body, `"dev/1"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kicked client still listed as connected: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _, _ := do(t, srv, "GET", "/api/v1/clients?connected=maybe", creds, ""); code != 400 {
		t.Errorf("connected=maybe: %d", code)
	}
}

func TestRetainedBrowseAndDelete(t *testing.T) {
	_, srv, addr := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}})
	pub := dial(t, addr, "pub")
	pub.publish(t, "home/a", "1", true)
	pub.publish(t, "home/b", "2", true)
	pub.publish(t, "home/bin", "\xff\x00", true)
	pub.publish(t, "other/c", "3", true)

	code, body, _ := do(t, srv, "GET", "/api/v1/retained?filter=home/%23&limit=2", creds, "")
	var res struct {
		Retained  []Retained
		Truncated bool
	}
	if err := json.Unmarshal([]byte(body), &res); code != 200 || err != nil {
		t.Fatalf("retained: %d %v %s", code, err, body)
	}
	if len(res.Retained) != 2 || !res.Truncated || res.Retained[0].Topic != "home/a" || *res.Retained[0].Payload != "1" || res.Retained[0].QoS != 1 {
		t.Errorf("retained page: %s", body)
	}
	_, body, _ = do(t, srv, "GET", "/api/v1/retained", creds, "")
	if err := json.Unmarshal([]byte(body), &res); err != nil || len(res.Retained) != 4 || res.Truncated {
		t.Errorf("all retained: %s", body)
	}
	if res.Retained[2].Topic != "home/bin" || res.Retained[2].Payload != nil || res.Retained[2].PayloadBase64 != "/wA=" {
		t.Errorf("binary payload: %+v", res.Retained[2])
	}
	for _, q := range []string{"?filter=a/%23/b", "?limit=0", "?limit=x"} {
		if code, _, _ := do(t, srv, "GET", "/api/v1/retained"+q, creds, ""); code != 400 {
			t.Errorf("retained%s: %d, want 400", q, code)
		}
	}

	sub := dial(t, addr, "sub")
	sub.subscribe(t, "home/b")
	if p := sub.next(t, "home/b"); string(p.Payload) != "2" {
		t.Fatalf("retained home/b: %q", p.Payload)
	}
	code, body, _ = do(t, srv, "DELETE", "/api/v1/retained/home/b", creds, "")
	if code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if p := sub.next(t, "home/b"); len(p.Payload) != 0 {
		t.Errorf("subscriber got %q after delete, want the empty message", p.Payload)
	}
	_, body, _ = do(t, srv, "GET", "/api/v1/retained?filter=home/%23", creds, "")
	if strings.Contains(body, `"home/b"`) {
		t.Errorf("home/b still retained: %s", body)
	}
	if code, _, _ := do(t, srv, "DELETE", "/api/v1/retained/home/b", creds, ""); code != 404 {
		t.Errorf("second delete: %d, want 404", code)
	}
	if code, _, _ := do(t, srv, "DELETE", "/api/v1/retained/a/%2B", creds, ""); code != 400 {
		t.Errorf("delete of a wildcard: %d, want 400", code)
	}
}

func TestPublish(t *testing.T) {
	_, srv, addr := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}, MaxBodyBytes: 1024})
	sub := dial(t, addr, "sub")
	sub.subscribe(t, "cmd/#")

	code, body, _ := do(t, srv, "POST", "/api/v1/publish", creds, `{"topic":"cmd/1","payload":"on","qos":1}`)
	if code != 200 || !strings.Contains(body, `"delivered": 1`) {
		t.Fatalf("publish: %d %s", code, body)
	}
	if p := sub.next(t, "cmd/"); p.Topic != "cmd/1" || string(p.Payload) != "on" || p.QoS != 1 {
		t.Errorf("received %s %q qos %d", p.Topic, p.Payload, p.QoS)
	}
	code, body, _ = do(t, srv, "POST", "/api/v1/publish", creds, `{"topic":"cmd/2","payload_base64":"/wA=","retain":true}`)
	if code != 200 {
		t.Fatalf("publish base64: %d %s", code, body)
	}
	if p := sub.next(t, "cmd/"); !bytes.Equal(p.Payload, []byte{0xff, 0}) {
		t.Errorf("binary payload %q", p.Payload)
	}
	if _, body, _ := do(t, srv, "GET", "/api/v1/retained?filter=cmd/2", creds, ""); !strings.Contains(body, `"cmd/2"`) {
		t.Errorf("retain flag lost: %s", body)
	}
	for _, bad := range []string{
		`{"topic":"cmd/+","payload":"x"}`,
		`{"topic":"","payload":"x"}`,
		`{"topic":"cmd/3","qos":3}`,
		`{"topic":"cmd/3","payload":"a","payload_base64":"YQ=="}`,
		`{"topic":"cmd/3","payload_base64":"%%%"}`,
		`{"topic":"cmd/3","unknown":1}`,
		`not json`,
	} {
		if code, body, _ := do(t, srv, "POST", "/api/v1/publish", creds, bad); code != 400 {
			t.Errorf("publish %s: %d %s, want 400", bad, code, body)
		}
	}
	big := `{"topic":"cmd/4","payload":"` + strings.Repeat("x", 2000) + `"}`
	if code, _, _ := do(t, srv, "POST", "/api/v1/publish", creds, big); code != 413 {
		t.Errorf("oversized body: %d, want 413", code)
	}
	code, body, _ = do(t, srv, "GET", "/api/v1/stats", creds, "")
	if code != 200 || !strings.Contains(body, `"clients_connected": 1`) || !strings.Contains(body, `"retained": 1`) {
		t.Errorf("stats: %d %s", code, body)
	}
}

func TestDashboardFiles(t *testing.T) {
	_, srv, _ := serve(t, Options{})
	code, body, h := do(t, srv, "GET", "/", "", "")
	if code != 200 || !strings.Contains(body, `<script src="vendor/mqtt.min.js">`) {
		t.Fatalf("/: %d %.200s", code, body)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP: %q", csp)
	}
	for _, p := range []string{"/app.js", "/style.css", "/vendor/mqtt.min.js"} {
		if code, _, _ := do(t, srv, "GET", p, "", ""); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
	if code, _, _ := do(t, srv, "GET", "/dashboard.go", "", ""); code != 404 {
		t.Errorf("/dashboard.go: %d, want 404", code)
	}
	// Everything the page loads comes from its own origin.
	files, _ := fs.Glob(dashboard.Files, "*.[jch]*") // the page, its scripts and styles
	for _, f := range files {
		b, _ := fs.ReadFile(dashboard.Files, f)
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`).Find(b); m != nil {
			t.Errorf("%s refers to another origin: %s", f, m)
		}
	}
}

// The vendored MQTT.js is the npm file, unmodified after its licence
// header, and the same version test/node pins.
func TestVendoredMQTTJS(t *testing.T) {
	b, err := fs.ReadFile(dashboard.Files, "vendor/mqtt.min.js")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^/\*! MQTT\.js (\S+), .*\(sha256 ([0-9a-f]{64})\)\.\n(?s:.*?)\*/\n`).FindSubmatch(b)
	if m == nil {
		t.Fatal("vendor/mqtt.min.js lacks its header (version, sha256, licence)")
	}
	version, want := string(m[1]), string(m[2])
	sum := sha256.Sum256(b[len(m[0]):])
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("vendor/mqtt.min.js body sha256 %s, header says %s", got, want)
	}
	lock, err := os.ReadFile("../../test/node/package-lock.json")
	if err != nil {
		t.Skipf("test/node/package-lock.json: %v", err)
	}
	var pl struct {
		Packages map[string]struct{ Version string } `json:"packages"`
	}
	if err := json.Unmarshal(lock, &pl); err != nil {
		t.Fatal(err)
	}
	if v := pl.Packages["node_modules/mqtt"].Version; v != version {
		t.Errorf("vendored MQTT.js %s, test/node pins %s", version, v)
	}
}
