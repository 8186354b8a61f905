package auth

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/topic"
)

func mustACL(t testing.TB, text string) *ACL {
	t.Helper()
	a, err := ParseACL(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func user(name, clientID string) *broker.ClientInfo {
	return &broker.ClientInfo{ClientID: clientID, Identity: broker.Identity{Username: name}}
}

func anon(clientID string) *broker.ClientInfo {
	return &broker.ClientInfo{ClientID: clientID, Identity: broker.Identity{Anonymous: true}}
}

const (
	pub  = broker.ActPublish
	sub  = broker.ActSubscribe
	read = broker.ActRead
)

func TestACLDecide(t *testing.T) {
	acl := mustACL(t, `
# sensors
deny  publish           user mallory  sensors/#
allow publish           user alice    sensors/alice/#
allow publish,read      client gw-1   gateways/1/#
allow subscribe,read    any           sensors/#
allow all               user "Jane Doe" jane/#
deny  all               anonymous     private/#
allow read              anonymous     public/#
allow subscribe         anonymous     public/+/news
allow all               any           users/%u/#
allow all               any           clients/%c/#
allow publish           any           mixed/%u-%c/x
allow read              any           $SYS/broker/uptime
allow all               user admin    #
deny  publish           any           sensors/#
allow publish           any           sensors/free
allow subscribe         user bob      deny/+/x
deny  subscribe         user bob      deny/a/#
allow subscribe         user bob      deny/#
`)
	alice, bob, mallory, admin := user("alice", "c-alice"), user("bob", "c-bob"), user("mallory", "c-m"), user("admin", "c-admin")
	jane := user("Jane Doe", "j")
	gw := anon("gw-1")
	gwUser := user("alice", "gw-1") // user and client rules both apply
	anonC := anon("anon-1")
	fake := &broker.ClientInfo{ClientID: "x", Identity: broker.Identity{Username: "alice", Anonymous: true}}
	hashUser := user("#", "c-h")
	slashUser := user("a/b", "c-s")
	plusClient := anon("+")
	tests := []struct {
		name  string
		c     *broker.ClientInfo
		act   broker.Action
		topic string
		want  bool
	}{
		{"user rule", alice, pub, "sensors/alice/temp", true},
		{"user rule parent level", alice, pub, "sensors/alice", true},
		{"user rule other topic", alice, pub, "sensors/bob/temp", false},
		{"deny first for mallory", mallory, pub, "sensors/mallory/temp", false},
		{"later deny for everyone", bob, pub, "sensors/bob/temp", false},
		{"deny before allow by order", bob, pub, "sensors/free", false},
		{"any read", bob, read, "sensors/x/y", true},
		{"publish not covered by subscribe,read", bob, pub, "sensors", false},
		{"client rule", gw, pub, "gateways/1/up", true},
		{"client rule read", gw, read, "gateways/1/down", true},
		{"client rule not subscribe", gw, sub, "gateways/1/down", false},
		{"client rule with a user", gwUser, pub, "gateways/1/up", true},
		{"user rule with a client", gwUser, pub, "sensors/alice/x", true},
		{"quoted user name", jane, pub, "jane/notes", true},
		{"anonymous deny", anonC, read, "private/x", false},
		{"anonymous allow", anonC, read, "public/x", true},
		{"anonymous rule not for users", bob, read, "public/x", false},
		{"anonymous flag wins over name", fake, pub, "sensors/alice/x", false},
		{"anonymous flag, no %u", fake, read, "users/alice/x", false},
		{"%u", bob, read, "users/bob/inbox", true},
		{"%u other user", bob, read, "users/alice/inbox", false},
		{"%u anonymous", anonC, read, "users//inbox", false},
		{"%c", bob, pub, "clients/c-bob/status", true},
		{"%c other", bob, pub, "clients/c-alice/status", false},
		{"%c anonymous", anonC, pub, "clients/anon-1", true},
		{"%u-%c in one level", bob, pub, "mixed/bob-c-bob/x", true},
		{"%u-%c wrong", bob, pub, "mixed/bob-c-bobx/x", false},
		{"user named # gets nothing from %u", hashUser, read, "users/#", false},
		{"user named # gets nothing from %u, literal", hashUser, read, "users/x/y", false},
		{"user with / gets nothing from %u", slashUser, read, "users/a/b/c", false},
		{"client ID + gets nothing from %c", plusClient, pub, "clients/+/x", false},
		{"$SYS literal", bob, read, "$SYS/broker/uptime", true},
		{"admin #", admin, pub, "anything/at/all", true},
		{"# does not cover $SYS", admin, read, "$SYS/broker/load", false},
		{"default deny", bob, pub, "nowhere", false},
		{"default deny anonymous", anonC, sub, "nowhere/#", false},

		// Subscribe filters: containment.
		{"filter inside pattern", bob, sub, "sensors/+/temp", true},
		{"filter equal pattern", bob, sub, "sensors/#", true},
		{"filter parent level", bob, sub, "sensors", true},
		{"filter wider than pattern", bob, sub, "#", false},
		{"filter + at top", bob, sub, "+/temp", false},
		{"filter $share stripped", bob, sub, "$share/g1/sensors/+/temp", true},
		{"filter $share wider", bob, sub, "$share/g1/#", false},
		{"filter $share empty", bob, sub, "$share/g1", false},
		{"anonymous filter exact", anonC, sub, "public/+/news", true},
		{"anonymous filter literal inside +", anonC, sub, "public/today/news", true},
		{"anonymous filter wider", anonC, sub, "public/#", false},
		{"filter %u", bob, sub, "users/bob/#", true},
		{"filter %u with + level", bob, sub, "users/+/#", false},
		{"admin any filter", admin, sub, "#", true},
		{"admin $SYS filter not under #", admin, sub, "$SYS/#", false},
		{"allow covers, no earlier deny", bob, sub, "deny/b/x", true},
		{"allow + rule first", bob, sub, "deny/+/x", true},
		{"deny overlaps before the wide allow", bob, sub, "deny/#", false},
		{"deny overlaps via +", bob, sub, "deny/+/y", false},
		{"no overlap with deny", bob, sub, "deny/b/#", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, line := acl.Decide(tt.c, tt.act, tt.topic)
			if got != tt.want {
				t.Fatalf("Decide(%s, %d, %q) = %v (line %d), want %v", tt.c.ClientID, tt.act, tt.topic, got, line, tt.want)
			}
		})
	}
}

func TestACLSubstitutionFailsClosed(t *testing.T) {
	// A deny rule whose substitution is unusable still denies (the level
	// acts as '+'); an allow rule with one allows nothing.
	acl := mustACL(t, "deny publish any users/%u/admin\nallow publish any #\n")
	if ok, _ := acl.Decide(anon("c"), pub, "users/x/admin"); ok {
		t.Fatal("anonymous escaped a %u deny rule")
	}
	if ok, _ := acl.Decide(user("#", "c"), pub, "users/x/admin"); ok {
		t.Fatal("user '#' escaped a %u deny rule")
	}
	if ok, _ := acl.Decide(user("bob", "c"), pub, "users/x/admin"); !ok {
		t.Fatal("bob denied on another user's topic")
	}
	if ok, _ := acl.Decide(user("bob", "c"), pub, "users/bob/admin"); ok {
		t.Fatal("bob allowed on his own denied topic")
	}
	acl = mustACL(t, "deny subscribe any users/%u/#\nallow subscribe any #\n")
	if ok, _ := acl.Decide(anon("c"), sub, "users/+/x"); ok {
		t.Fatal("anonymous escaped a %u deny rule on subscribe")
	}
	if ok, _ := acl.Decide(user("bob", "c"), sub, "users/alice/x"); !ok {
		t.Fatal("bob denied on another user's filter")
	}
	if ok, _ := acl.Decide(user("bob", "c"), sub, "users/+/x"); ok {
		t.Fatal("bob's + filter overlaps his own denied topics")
	}
}

func TestACLEmptyDeniesAll(t *testing.T) {
	acl := mustACL(t, "# nothing\n\n")
	if acl.Len() != 0 {
		t.Fatal(acl.Len())
	}
	if ok, _ := acl.Decide(user("a", "b"), read, "x"); ok {
		t.Fatal("empty ACL allowed")
	}
}

func TestACLParseErrors(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"permit all any #", `line 1: want allow or deny, got "permit"`},
		{"allow", "line 1: missing action"},
		{"allow write any #", `unknown action "write"`},
		{"allow all", "missing principal"},
		{"allow all everyone #", `unknown principal "everyone"`},
		{"allow all user", `missing name after "user"`},
		{"allow all user alice", "missing topic pattern"},
		{"allow all user \"alice #", "unterminated quote"},
		{"allow all user a:b #", "contains ':'"},
		{"allow all client \"\" #", "bad client ID"},
		{"allow all any a/#/b", "'#' must be the last level"},
		{"allow all any a/b#", "alone in their level"},
		{"allow all any a+/b", "alone in their level"},
		{"allow all any $share/g/a", "$share/"},
		{"allow all any a\x00b", "U+0000"},
		{"\n\nallow all any \xff", "line 3: topic pattern is not valid UTF-8"},
		{"allow all any " + strings.Repeat("a", 65536), "longer than 65535"},
		{"allow all any " + strings.Repeat("a", 80000), "line 1: longer than"},
	} {
		_, err := ParseACL(strings.NewReader(tt.text))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseACL(%.40q) = %v, want %q", tt.text, err, tt.want)
		}
	}
	// Topics may hold spaces; only whole-line comments exist.
	acl := mustACL(t, "  allow   read   any   a b/# \n")
	if ok, _ := acl.Decide(anon("c"), read, "a b/c"); !ok {
		t.Fatal("pattern with a space")
	}
}

// TestPatternBruteForce checks matchName, containsFilter and overlapsFilter
// against topic.Match over every topic name of a small universe.
func TestPatternBruteForce(t *testing.T) {
	alphabet := []string{"a", "b", "$s", ""}
	var names []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		if depth == 0 {
			return
		}
		for i, l := range alphabet {
			if prefix != "" && i == 2 {
				continue // '$' only matters in the first level
			}
			n := l
			if prefix != "" {
				n = prefix[1:] + "/" + l
			}
			if n != "" {
				names = append(names, n)
			}
			gen("/"+n, depth-1)
		}
	}
	gen("", 5)
	levels := []string{"a", "b", "$s", "", "+"}
	randFilter := func(r *rand.Rand) string {
		n := 1 + r.IntN(4)
		parts := make([]string, 0, n)
		for i := range n {
			l := levels[r.IntN(len(levels))]
			if i > 0 && l == "$s" {
				l = "a"
			}
			parts = append(parts, l)
		}
		if r.IntN(3) == 0 {
			if n < 4 {
				parts = append(parts, "#")
			} else {
				parts[n-1] = "#"
			}
		}
		f := strings.Join(parts, "/")
		if f == "" {
			f = "a"
		}
		return f
	}
	r := rand.New(rand.NewPCG(1, 2))
	var v vars
	for range 6000 {
		ps, f := randFilter(r), randFilter(r)
		if topic.ValidateFilter(ps) != nil || topic.ValidateFilter(f) != nil {
			continue
		}
		p, err := compilePattern(ps)
		if err != nil {
			t.Fatal(err)
		}
		contains, overlaps := true, false
		for _, n := range names {
			pm := topic.Match(ps, n)
			if got := p.matchName(n, &v, false); got != pm {
				t.Fatalf("matchName(%q, %q) = %v, topic.Match says %v", ps, n, got, pm)
			}
			if topic.Match(f, n) {
				if pm {
					overlaps = true
				} else {
					contains = false
				}
			}
		}
		// Names are at most 5 levels, filters 4 plus '#': a filter ending
		// in '#' matches deeper names too, but a pattern of at most 5
		// levels decides them the same way as the 5-level ones.
		if got := p.containsFilter(f, &v, false); got != contains {
			t.Fatalf("containsFilter(%q, %q) = %v, brute force %v", ps, f, got, contains)
		}
		if got := p.overlapsFilter(f, &v, true); got != overlaps {
			t.Fatalf("overlapsFilter(%q, %q) = %v, brute force %v", ps, f, got, overlaps)
		}
	}
}

func TestAllowNoAlloc(t *testing.T) {
	acl := mustACL(t, "allow read user alice sensors/#\nallow all any users/%u/#\nallow read any x/%c/#\n")
	a := &Auth{audit: newAudit(nil, 1)}
	a.state.Store(&state{acl: acl})
	c := user("alice", "c1")
	for _, tc := range []struct {
		act   broker.Action
		topic string
	}{{read, "sensors/1/temp"}, {read, "users/alice/inbox"}, {read, "x/c1/y"}, {sub, "$share/g/users/alice/+"}} {
		if !a.Allow(c, tc.act, tc.topic) {
			t.Fatalf("%q denied", tc.topic)
		}
		if n := testing.AllocsPerRun(100, func() { a.Allow(c, tc.act, tc.topic) }); n != 0 {
			t.Errorf("Allow(%q) allocates %v", tc.topic, n)
		}
	}
}

func TestAllowWithoutACL(t *testing.T) {
	a, _ := newAuth(t, DefaultConfig())
	if !a.Allow(anon("c"), pub, "#anything") || !a.Allow(nil, read, "x") {
		t.Fatal("no ACL file must allow everything")
	}
	dir := t.TempDir()
	af := writeFile(t, dir, "acl", "allow read user bob x\n")
	a, _ = newAuth(t, Config{AllowAnonymous: true, ACLFile: af})
	su := &broker.ClientInfo{ClientID: "c", Identity: broker.Identity{Username: "root", Superuser: true}}
	if !a.Allow(su, pub, "anything") {
		t.Fatal("superuser denied")
	}
	if a.Allow(nil, read, "x") {
		t.Fatal("nil client allowed under an ACL")
	}
	if a.Allow(user("bob", "c"), broker.Action(7), "x") {
		t.Fatal("unknown action allowed")
	}
}

// bigACL is a realistic file: per-user rules for many users, then shared
// rules.
func bigACL(users int) string {
	var b strings.Builder
	for i := range users {
		fmt.Fprintf(&b, "allow publish user u%d devices/u%d/#\n", i, i)
	}
	b.WriteString("deny all any admin/#\nallow read any devices/+/status\nallow all any users/%u/#\nallow subscribe,read any broadcast/#\n")
	return b.String()
}

func benchAllow(b *testing.B, text string, c *broker.ClientInfo, act broker.Action, t string) {
	acl := mustACL(b, text)
	a := &Auth{audit: newAudit(nil, 1)}
	a.state.Store(&state{acl: acl})
	if !a.Allow(c, act, t) {
		b.Fatalf("%q denied", t)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		a.Allow(c, act, t)
	}
}

func BenchmarkAllowReadOneRule(b *testing.B) {
	benchAllow(b, "allow read any sensors/#\n", user("alice", "c1"), read, "sensors/building-1/floor-2/temp")
}

func BenchmarkAllowReadSubstitution(b *testing.B) {
	benchAllow(b, bigACL(100), user("alice", "c1"), read, "users/alice/inbox/42")
}

func BenchmarkAllowRead10kUsers(b *testing.B) {
	// Per-user rules of other users are skipped by the index: cost depends
	// on this client's rules and the shared ones only.
	benchAllow(b, bigACL(10000), user("u5000", "c1"), read, "broadcast/news/today")
}

func BenchmarkAllowReadLastOf100Shared(b *testing.B) {
	var s strings.Builder
	for i := range 100 {
		fmt.Fprintf(&s, "allow read any area%d/+/x/#\n", i)
	}
	s.WriteString("allow read any final/#\n")
	benchAllow(b, s.String(), user("alice", "c1"), read, "final/a/b/c")
}

func BenchmarkAllowSubscribe(b *testing.B) {
	benchAllow(b, bigACL(100), user("alice", "c1"), sub, "$share/g/broadcast/+/today")
}

func BenchmarkAllowNoACL(b *testing.B) {
	a := &Auth{audit: newAudit(nil, 1)}
	a.state.Store(&state{})
	c := user("alice", "c1")
	b.ReportAllocs()
	for b.Loop() {
		a.Allow(c, read, "x/y")
	}
}

func BenchmarkVerifyArgon2idDefault(b *testing.B) {
	h, _ := HashPassword([]byte("pw"), DefaultArgon2)
	ph, _ := parseHash(h)
	b.ReportAllocs()
	for b.Loop() {
		ph.verify([]byte("pw"))
	}
}
