package auth

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/limit"
)

// docBlocks returns the fenced blocks of docs/security.md whose info string
// is lang.
func docBlocks(t *testing.T, lang string) []string {
	t.Helper()
	data, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?ms)^```" + lang + "\n(.*?)^```\n")
	var out []string
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatalf("no ```%s block in docs/security.md", lang)
	}
	return out
}

// strict decodes node into v, rejecting unknown keys.
func strict(t *testing.T, node *yaml.Node, v any) {
	t.Helper()
	b, err := yaml.Marshal(node)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestSecurityDoc checks the examples of docs/security.md: the yaml blocks'
// auth and limits sections decode strictly and validate, the password-file
// example parses, and the ACL example parses and decides as the text says.
func TestSecurityDoc(t *testing.T) {
	for i, block := range docBlocks(t, "yaml") {
		var doc map[string]yaml.Node
		if err := yaml.Unmarshal([]byte(block), &doc); err != nil {
			t.Fatalf("yaml block %d: %v", i, err)
		}
		if n, ok := doc["auth"]; ok {
			cfg := DefaultConfig()
			strict(t, &n, &cfg)
			if err := cfg.Validate(); err != nil {
				t.Errorf("yaml block %d: %v", i, err)
			}
		}
		if n, ok := doc["limits"]; ok {
			// The abuse limits, with the broker's other limits (checked
			// with the whole file by internal/config) left out.
			var m map[string]yaml.Node
			if err := n.Decode(&m); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"max_packet_size", "max_inflight", "max_queued_messages", "max_queued_bytes",
				"max_topic_alias", "max_connections", "max_session_expiry", "max_keep_alive", "max_qos", "connect_timeout"} {
				delete(m, k)
			}
			var own yaml.Node
			if err := own.Encode(m); err != nil {
				t.Fatal(err)
			}
			cfg := limit.DefaultConfig()
			strict(t, &own, &cfg)
			if err := cfg.Validate(); err != nil {
				t.Errorf("yaml block %d: %v", i, err)
			}
			if i == 0 && cfg.PublishRate != 100 {
				t.Errorf("limits example decoded as %+v", cfg)
			}
		}
	}
	for _, block := range docBlocks(t, "passwd") {
		if _, err := ParsePasswordFile(strings.NewReader(block)); err != nil {
			t.Errorf("password file example: %v", err)
		}
	}
	blocks := docBlocks(t, "acl")
	acl, err := ParseACL(strings.NewReader(blocks[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		c     *broker.ClientInfo
		act   broker.Action
		topic string
		want  bool
	}{
		{user("dashboard", "d1"), sub, "devices/+/telemetry", true},
		{user("dashboard", "d1"), sub, "$share/dash/devices/+/telemetry", true},
		{user("dashboard", "d1"), sub, "devices/#", false},
		{user("Jane Doe", "j"), read, "devices/gw-1/telemetry", true},
		{anon("gw-7"), pub, "devices/gw-7/telemetry", true},
		{anon("gw-7"), pub, "devices/gw-8/telemetry", false},
		{anon("gw-7"), sub, "devices/gw-7/commands/#", true},
		{anon("gw-test"), pub, "devices/gw-test/telemetry", false},
		{user("alice", "a"), pub, "users/alice/notes", true},
		{user("alice", "a"), read, "users/bob/notes", false},
		{anon("x"), sub, "public/news/+", true},
		{anon("x"), sub, "public/#", false},
		{user("bob", "b"), read, "$SYS/broker/uptime", true},
		{user("bob", "b"), pub, "$SYS/broker/uptime", false},
		{user("ops", "o"), pub, "anything", true},
	} {
		if got, _ := acl.Decide(tt.c, tt.act, tt.topic); got != tt.want {
			t.Errorf("doc example: %s/%q %d %q = %v, want %v", tt.c.ClientID, tt.c.Username, tt.act, tt.topic, got, tt.want)
		}
	}
}
