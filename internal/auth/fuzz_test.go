package auth

import (
	"bytes"
	"strings"
	"testing"

	"github.com/starling-mqtt/starling/internal/broker"
)

// FuzzParseACL parses arbitrary ACL files; whatever parses must decide any
// request without panicking, deterministically, and a rule that parses must
// parse again from its own line. Seeds: testdata/fuzz/FuzzParseACL.
func FuzzParseACL(f *testing.F) {
	f.Add([]byte("allow all any #\n"), "alice", "c1", "a/b")
	f.Add([]byte("deny publish user \"Jane Doe\" users/%u/%c/#\nallow subscribe,read anonymous $SYS/+/x\n"), "Jane Doe", "%u", "$share/g/+/x")
	f.Fuzz(func(t *testing.T, data []byte, username, clientID, topic string) {
		acl, err := ParseACL(bytes.NewReader(data))
		if err != nil {
			return
		}
		clients := []*broker.ClientInfo{
			{ClientID: clientID, Identity: broker.Identity{Username: username}},
			{ClientID: clientID, Identity: broker.Identity{Anonymous: true}},
		}
		for _, c := range clients {
			for act := broker.ActPublish; act <= broker.ActRead+1; act++ {
				ok1, line1 := acl.Decide(c, act, topic)
				ok2, line2 := acl.Decide(c, act, topic)
				if ok1 != ok2 || line1 != line2 {
					t.Fatalf("Decide not deterministic")
				}
				if line1 < 0 || (line1 == 0 && ok1) {
					t.Fatalf("allowed without a rule (line %d)", line1)
				}
			}
		}
		for _, r := range acl.rules {
			line := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")[r.line-1]
			if _, err := parseRule(strings.TrimSpace(line)); err != nil {
				t.Fatalf("line %d parsed once, not twice: %v", r.line, err)
			}
		}
	})
}

// FuzzParsePasswordFile parses arbitrary password files: no panic, and every
// entry's hash parses again. Hashes are not verified (a fuzzed argon2id may
// legitimately ask for 1 GiB). Seeds: testdata/fuzz/FuzzParsePasswordFile.
func FuzzParsePasswordFile(f *testing.F) {
	f.Add([]byte("alice:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\n"))
	f.Add([]byte("# c\nbob:$2a$04$QnyL6IO5kJmf0BCnyh6cQuBdiQ0F0XL0oE5U0b9Yq1G1QmE7h8K4y\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, entries, err := parsePasswords(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(users) != len(entries) {
			t.Fatalf("%d users, %d entries", len(users), len(entries))
		}
		for _, e := range entries {
			if ValidUsername(e.User) != nil {
				t.Fatalf("invalid user %q accepted", e.User)
			}
			h, err := parseHash(e.Hash)
			if err != nil {
				t.Fatalf("entry %q reparsed: %v", e.User, err)
			}
			if h.argon != nil && (h.argon.p.Memory > maxArgonMemory || h.argon.p.Time > maxArgonTime) {
				t.Fatalf("unbounded argon2 parameters accepted")
			}
		}
	})
}
