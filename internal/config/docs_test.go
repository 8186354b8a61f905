package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// docFiles are the documents whose YAML examples must load and validate.
var docFiles = []string{"../../docs/configuration.md", "../../README.md", "../../docs/websocket.md", "../../docs/security.md", "../../docs/bridge.md"}

// TestDocsMentionEveryKey is a presubmit check: docs/configuration.md has a
// table row for every YAML key of Config and Limits, with its default.
func TestDocsMentionEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // key path -> its table row
	for line := range strings.Lines(string(doc)) {
		if m := regexp.MustCompile("^\\| `([a-z_.]+)` \\|").FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	for _, section := range []string{"limits", "tls", "websocket"} {
		if _, ok := rows[section]; !ok {
			t.Errorf("docs/configuration.md: no row for %s", section)
		}
	}
	for _, l := range leaves(reflect.ValueOf(Default()), "") {
		row, ok := rows[l.path]
		if !ok {
			t.Errorf("docs/configuration.md: no table row for key %s", l.path)
			continue
		}
		def := fmt.Sprint(l.value.Interface())
		switch v := l.value.Interface().(type) {
		case string:
			def = fmt.Sprintf("%q", v)
		case time.Duration:
			def = v.String()
		case []string:
			q := make([]string, len(v))
			for i, e := range v {
				q[i] = fmt.Sprintf("%q", e)
			}
			def = "[" + strings.Join(q, ", ") + "]"
		}
		if cols := strings.Split(row, "|"); len(cols) < 4 || strings.TrimSpace(cols[2]) != "`"+def+"`" {
			t.Errorf("docs/configuration.md: row for %s should give the default `%s`:\n%s", l.path, def, row)
		}
	}
}

// TestDocExamples loads every ```yaml block of the docs and the README and
// validates it.
func TestDocExamples(t *testing.T) {
	block := regexp.MustCompile("(?s)```yaml\n(.*?)```")
	for _, file := range docFiles {
		doc, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		blocks := block.FindAllSubmatch(doc, -1)
		if len(blocks) == 0 {
			t.Errorf("%s: no yaml example", file)
		}
		for i, b := range blocks {
			cfg, err := Parse(b[1])
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				t.Errorf("%s: yaml example %d: %v", file, i+1, err)
			}
			if strings.HasSuffix(file, "configuration.md") && i == len(blocks)-1 {
				checkEveryKeyAtDefault(t, file, b[1], cfg)
			}
		}
	}
}

// checkEveryKeyAtDefault checks that the YAML in data sets every key, each to
// its default.
func checkEveryKeyAtDefault(t *testing.T, file string, data []byte, cfg Config) {
	t.Helper()
	if !equal(cfg, Default()) {
		t.Errorf("%s: the last example should set every key to its default; it gives\n%+v", file, cfg)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	var keys []keyAt
	walk(&root, "", &keys)
	set := map[string]bool{}
	for _, k := range keys {
		set[k.path] = true
	}
	for _, l := range leaves(reflect.ValueOf(cfg), "") {
		if !set[l.path] {
			t.Errorf("%s: the last example lacks key %s", file, l.path)
		}
	}
}

// TestSecurityHardeningExample loads the hardening example of
// docs/security.md (its first yaml block) as a whole configuration: it must
// validate and set what the guide says it sets.
func TestSecurityHardeningExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/security.md: no yaml example")
	}
	cfg, err := Parse(m[1])
	if err != nil {
		t.Fatalf("hardening example: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("hardening example: %v", err)
	}
	a, l := cfg.Auth, cfg.Limits
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"MQTT over TLS on 8883", cfg.MQTTS == ":8883" && cfg.TLS.CertFile != "" && cfg.TLS.KeyFile != ""},
		{"plain TCP and HTTP on loopback only", strings.HasPrefix(cfg.TCP, "127.0.0.1:") && strings.HasPrefix(cfg.HTTP, "127.0.0.1:")},
		{"client certificates checked", cfg.TLS.ClientCAFile != "" && cfg.TLS.ClientAuth != "off" && a.CertUsername == "cn"},
		{"anonymous off but on the loopback tcp listener", !a.AllowAnonymous && a.AnonymousAllowed("tcp") && !a.AnonymousAllowed("mqtts") && !a.AnonymousAllowed("http")},
		{"passwords and ACL", a.PasswordFile != "" && a.ACLFile != ""},
		{"publish rates set", l.PublishRate > 0 && l.PublishBytesRate > 0},
		{"queues bounded tighter than the defaults", l.MaxQueuedBytes > 0 && l.MaxQueuedBytes < Default().Limits.MaxQueuedBytes},
		{"connections bounded", l.MaxConnections > 0 && l.MaxConnectionsPerAddress > 0 && l.ConnectRatePerAddress > 0},
		{"keep alive capped", l.MaxKeepAlive > 0},
	} {
		if !c.ok {
			t.Errorf("hardening example: %s: not so in %+v", c.what, cfg)
		}
	}
}

// TestWebSocketDocCoversTransportKeys: every listener, TLS, WebSocket and
// proxy key, and auth.cert_username, is set in some yaml example of
// docs/websocket.md, so a new option there comes with an example.
func TestWebSocketDocCoversTransportKeys(t *testing.T) {
	doc, err := os.ReadFile("../../docs/websocket.md")
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, b := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1) {
		var root yaml.Node
		if err := yaml.Unmarshal(b[1], &root); err != nil {
			t.Fatal(err)
		}
		var keys []keyAt
		walk(&root, "", &keys)
		for _, k := range keys {
			set[k.path] = true
		}
	}
	want := []string{"auth.cert_username"}
	for _, l := range leaves(reflect.ValueOf(Default()), "") {
		top, _, _ := strings.Cut(l.path, ".")
		switch top {
		case "tcp", "http", "mqtts", "https", "listen_any", "tls", "websocket", "trusted_proxies", "proxy_protocol", "proxy_protocol_listeners":
			want = append(want, l.path)
		}
	}
	if len(want) < 20 {
		t.Fatalf("only %d keys to look for: %v", len(want), want)
	}
	for _, k := range want {
		if !set[k] {
			t.Errorf("docs/websocket.md: no yaml example sets %s", k)
		}
	}
}
