package topic

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

type key struct{ client, group, filter string }

// model is the brute-force reference for Index: a map of subscriptions and a
// loop over Match.
type model map[key]int

func (m model) match(name string) []Entry[int] {
	var out []Entry[int]
	for k, v := range m {
		if Match(k.filter, name) {
			out = append(out, Entry[int]{Client: k.client, Group: k.group, Filter: k.filter, Value: v})
		}
	}
	return sortEntries(out)
}

func sortEntries(es []Entry[int]) []Entry[int] {
	slices.SortFunc(es, func(a, b Entry[int]) int {
		return cmp.Or(strings.Compare(a.Client, b.Client), strings.Compare(a.Group, b.Group),
			strings.Compare(a.Filter, b.Filter), cmp.Compare(a.Value, b.Value))
	})
	return es
}

// checkIndex verifies the index's invariants against m: counts, the
// per-client refs, and that no empty node is left unpruned.
func checkIndex(t testing.TB, ix *Index[int], m model) {
	t.Helper()
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.n != len(m) {
		t.Fatalf("n = %d, model has %d", ix.n, len(m))
	}
	refs := 0
	for id, c := range ix.clients {
		if id != c.id || len(c.refs) == 0 {
			t.Fatalf("client %q: id %q, %d refs", id, c.id, len(c.refs))
		}
		for j, r := range c.refs {
			s := r.n.subs[r.i]
			if s.client != id || s.group != r.key.group || r.n.filter != r.key.filter {
				t.Fatalf("client %q ref %+v points at %+v on %q", id, r.key, s, r.n.filter)
			}
			if v, ok := m[key{id, r.key.group, r.key.filter}]; !ok || v != s.value {
				t.Fatalf("client %q ref %+v: value %d, model %d, %v", id, r.key, s.value, v, ok)
			}
			if c.byKey != nil && c.byKey[r.key] != j {
				t.Fatalf("client %q byKey[%+v] = %d, want %d", id, r.key, c.byKey[r.key], j)
			}
		}
		if c.byKey != nil && len(c.byKey) != len(c.refs) {
			t.Fatalf("client %q: byKey has %d, refs %d", id, len(c.byKey), len(c.refs))
		}
		refs += len(c.refs)
	}
	if refs != len(m) {
		t.Fatalf("refs = %d, model has %d", refs, len(m))
	}
	subs := 0
	var walk func(n *node[int], depth int)
	walk = func(n *node[int], depth int) {
		if depth > 0 && n.subs == nil && n.children == nil && n.plus == nil && n.hash == nil {
			t.Fatalf("unpruned empty node %q under %q", n.key, n.parent.filter)
		}
		if (len(n.subs) == 0) != (n.subs == nil) {
			t.Fatalf("node %q: empty non-nil subs", n.filter)
		}
		subs += len(n.subs)
		for k, c := range n.children {
			if c.key != k || c.parent != n {
				t.Fatalf("child %q: key %q, wrong parent", k, c.key)
			}
			walk(c, depth+1)
		}
		for _, c := range []*node[int]{n.plus, n.hash} {
			if c != nil {
				if c.parent != n {
					t.Fatal("wildcard child with wrong parent")
				}
				walk(c, depth+1)
			}
		}
	}
	walk(&ix.root, 0)
	if subs != len(m) {
		t.Fatalf("trie holds %d subs, model has %d", subs, len(m))
	}
}

func matchSorted(ix *Index[int], name string) []Entry[int] {
	return sortEntries(ix.Match(name, nil))
}

func TestIndexMatchTable(t *testing.T) {
	for _, tt := range matchTests {
		ix := NewIndex[int]()
		ix.Add("c", "", tt.filter, 1)
		got := len(ix.Match(tt.name, nil)) == 1
		if got != tt.want {
			t.Errorf("index with %q matching %q = %v, want %v", tt.filter, tt.name, got, tt.want)
		}
	}
}

func TestIndexAddReplaceRemove(t *testing.T) {
	ix := NewIndex[int]()
	m := model{}
	add := func(c, g, f string, v int, wantReplaced bool) {
		t.Helper()
		if got := ix.Add(c, g, f, v); got != wantReplaced {
			t.Fatalf("Add(%q, %q, %q) replaced = %v, want %v", c, g, f, got, wantReplaced)
		}
		m[key{c, g, f}] = v
		checkIndex(t, ix, m)
	}
	remove := func(c, g, f string, want bool) {
		t.Helper()
		if got := ix.Remove(c, g, f); got != want {
			t.Fatalf("Remove(%q, %q, %q) = %v, want %v", c, g, f, got, want)
		}
		delete(m, key{c, g, f})
		checkIndex(t, ix, m)
	}
	add("a", "", "sport/tennis/+", 1, false)
	add("a", "", "sport/tennis/+", 2, true) // replace keeps one entry, new value
	if got := ix.Match("sport/tennis/p1", nil); len(got) != 1 || got[0].Value != 2 {
		t.Fatalf("after replace: %+v", got)
	}
	add("b", "", "sport/tennis/+", 3, false)
	add("a", "", "sport/#", 4, false) // overlapping subscription of a
	add("a", "g", "sport/tennis/+", 5, false)
	add("b", "g", "sport/tennis/+", 6, false)
	want := sortEntries([]Entry[int]{
		{"a", "", "sport/#", 4}, {"a", "", "sport/tennis/+", 2}, {"a", "g", "sport/tennis/+", 5},
		{"b", "", "sport/tennis/+", 3}, {"b", "g", "sport/tennis/+", 6},
	})
	if got := matchSorted(ix, "sport/tennis/p1"); !slices.Equal(got, want) {
		t.Fatalf("Match = %+v\nwant %+v", got, want)
	}
	if ix.Len() != 5 {
		t.Fatalf("Len = %d", ix.Len())
	}
	remove("a", "", "sport/tennis/x", false)
	remove("c", "", "sport/tennis/+", false)
	remove("a", "h", "sport/tennis/+", false)
	remove("a", "", "sport/tennis/+", true)
	remove("a", "", "sport/tennis/+", false)
	remove("b", "", "sport/tennis/+", true)
	remove("a", "g", "sport/tennis/+", true)
	remove("b", "g", "sport/tennis/+", true)
	remove("a", "", "sport/#", true)
	if ix.Len() != 0 || len(ix.clients) != 0 || ix.root.children != nil {
		t.Fatalf("not empty after removing all: len %d, %d clients, root %+v", ix.Len(), len(ix.clients), ix.root)
	}
}

func TestIndexPrune(t *testing.T) {
	ix := NewIndex[int]()
	ix.Add("a", "", "a/b/c/d", 1)
	ix.Add("a", "", "a/+/#", 1)
	ix.Add("a", "", "a", 1)
	ix.Remove("a", "", "a/b/c/d")
	ix.Remove("a", "", "a/+/#")
	checkIndex(t, ix, model{{"a", "", "a"}: 1})
	n := ix.root.children["a"]
	if n == nil || n.children != nil || n.plus != nil || n.hash != nil {
		t.Fatalf("node a not pruned: %+v", n)
	}
	ix.Remove("a", "", "a")
	if ix.root.children != nil {
		t.Fatal("root not pruned")
	}
}

func TestIndexDollarTopics(t *testing.T) {
	ix := NewIndex[int]()
	ix.Add("all", "", "#", 1)
	ix.Add("plus", "", "+/monitor/Clients", 1)
	ix.Add("sys", "", "$SYS/#", 1)
	ix.Add("sysplus", "", "$SYS/monitor/+", 1)
	ix.Add("shared", "g", "#", 1) // [MQTT-4.7.2-1] applies to shared filters too
	clients := func(name string) []string {
		var cs []string
		for _, e := range ix.Match(name, nil) {
			cs = append(cs, e.Client)
		}
		slices.Sort(cs)
		return cs
	}
	if got := clients("$SYS/monitor/Clients"); !slices.Equal(got, []string{"sys", "sysplus"}) {
		t.Errorf("$SYS/monitor/Clients -> %v", got)
	}
	if got := clients("SYS/monitor/Clients"); !slices.Equal(got, []string{"all", "plus", "shared"}) {
		t.Errorf("SYS/monitor/Clients -> %v", got)
	}
	if got := clients("$SYS"); !slices.Equal(got, []string{"sys"}) {
		t.Errorf("$SYS -> %v", got)
	}
}

func TestIndexClientsAndRemoveClient(t *testing.T) {
	ix := NewIndex[int]()
	m := model{}
	// c1 has more than smallRefs subscriptions, so its map is used.
	for i := range 20 {
		f := fmt.Sprintf("t/%d", i)
		ix.Add("c1", "", f, i)
		m[key{"c1", "", f}] = i
	}
	ix.Add("c1", "g", "t/+", 100)
	ix.Add("c1", "", "t/+", 101)
	ix.Add("c2", "", "t/+", 102)
	ix.Add("c2", "g", "t/+", 103)
	m[key{"c1", "g", "t/+"}], m[key{"c1", "", "t/+"}] = 100, 101
	m[key{"c2", "", "t/+"}], m[key{"c2", "g", "t/+"}] = 102, 103
	checkIndex(t, ix, m)

	got := model{}
	ix.ClientSubscriptions("c1", func(g, f string, v int) bool {
		got[key{"c1", g, f}] = v
		return true
	})
	if len(got) != 22 {
		t.Fatalf("ClientSubscriptions(c1) gave %d", len(got))
	}
	for k, v := range got {
		if m[k] != v {
			t.Fatalf("ClientSubscriptions: %+v = %d, want %d", k, v, m[k])
		}
	}
	calls := 0
	ix.ClientSubscriptions("c1", func(string, string, int) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("ClientSubscriptions didn't stop: %d calls", calls)
	}
	ix.ClientSubscriptions("nobody", func(string, string, int) bool { t.Fatal("called"); return true })
	// fn may modify the index.
	ix.ClientSubscriptions("c2", func(g, f string, _ int) bool { ix.Remove("c2", g, f); return true })
	delete(m, key{"c2", "", "t/+"})
	delete(m, key{"c2", "g", "t/+"})
	checkIndex(t, ix, m)

	ix.Add("c2", "", "t/+", 104)
	m[key{"c2", "", "t/+"}] = 104
	if n := ix.RemoveClient("c1"); n != 22 {
		t.Fatalf("RemoveClient(c1) = %d", n)
	}
	for k := range m {
		if k.client == "c1" {
			delete(m, k)
		}
	}
	checkIndex(t, ix, m)
	if n := ix.RemoveClient("c1"); n != 0 {
		t.Fatalf("second RemoveClient(c1) = %d", n)
	}
	if got := matchSorted(ix, "t/5"); !slices.Equal(got, []Entry[int]{{"c2", "", "t/+", 104}}) {
		t.Fatalf("Match after RemoveClient = %+v", got)
	}
	if ix.Len() != 1 {
		t.Fatalf("Len = %d", ix.Len())
	}
}

// TestIndexOwnsStrings checks that the index copies its keys, so a caller may
// pass strings whose bytes it reuses.
func TestIndexOwnsStrings(t *testing.T) {
	ix := NewIndex[int]()
	c, g, f := []byte("client"), []byte("group"), []byte("a/b")
	ix.Add(string(c), string(g), string(f), 1)
	got := ix.Match("a/b", nil)
	if len(got) != 1 || got[0].Client != "client" || got[0].Group != "group" || got[0].Filter != "a/b" {
		t.Fatalf("Match = %+v", got)
	}
}

var (
	randLevels     = []string{"a", "b", "$c", "", "+", "#"}
	randNameLevels = []string{"a", "b", "$c", "", "d"}
)

func randFilter(r *rand.Rand) string {
	n := 1 + r.IntN(4)
	lv := make([]string, n)
	for i := range lv {
		lv[i] = randLevels[r.IntN(len(randLevels)-1)]
	}
	if r.IntN(4) == 0 {
		lv[n-1] = "#"
	}
	return strings.Join(lv, "/")
}

func randName(r *rand.Rand) string {
	lv := make([]string, 1+r.IntN(5))
	for i := range lv {
		lv[i] = randNameLevels[r.IntN(len(randNameLevels))]
	}
	return strings.Join(lv, "/")
}

// TestIndexRandom compares the index with brute force over random Add,
// Remove and RemoveClient operations.
func TestIndexRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ix := NewIndex[int]()
	m := model{}
	groups := []string{"", "", "g1", "g2"}
	for step := range 20000 {
		c := fmt.Sprintf("c%d", r.IntN(12))
		g := groups[r.IntN(len(groups))]
		f := randFilter(r)
		switch op := r.IntN(100); {
		case op < 60:
			_, had := m[key{c, g, f}]
			if got := ix.Add(c, g, f, step); got != had {
				t.Fatalf("step %d: Add(%q,%q,%q) = %v, want %v", step, c, g, f, got, had)
			}
			m[key{c, g, f}] = step
		case op < 98:
			_, had := m[key{c, g, f}]
			if got := ix.Remove(c, g, f); got != had {
				t.Fatalf("step %d: Remove(%q,%q,%q) = %v, want %v", step, c, g, f, got, had)
			}
			delete(m, key{c, g, f})
		default:
			want := 0
			for k := range m {
				if k.client == c {
					delete(m, k)
					want++
				}
			}
			if got := ix.RemoveClient(c); got != want {
				t.Fatalf("step %d: RemoveClient(%q) = %d, want %d", step, c, got, want)
			}
		}
		if step%200 == 0 {
			checkIndex(t, ix, m)
			for range 50 {
				name := randName(r)
				if got, want := matchSorted(ix, name), m.match(name); !slices.Equal(got, want) {
					t.Fatalf("step %d: Match(%q)\n got %+v\nwant %+v", step, name, got, want)
				}
				want := m.match(name)
				if got := ix.Count(name, ""); got != len(want) {
					t.Fatalf("step %d: Count(%q) = %d, want %d", step, name, got, len(want))
				}
				except := fmt.Sprintf("c%d", r.IntN(12))
				others := 0
				for _, e := range want {
					if e.Client != except {
						others++
					}
				}
				if got := ix.Count(name, except); got != others {
					t.Fatalf("step %d: Count(%q, %q) = %d, want %d", step, name, except, got, others)
				}
			}
		}
	}
	if ix.Len() != len(m) {
		t.Fatalf("Len = %d, want %d", ix.Len(), len(m))
	}
}

// TestIndexConcurrent runs Add, Remove, RemoveClient, ClientSubscriptions
// and Match at once; run it with -race. Subscriptions of the "stable" client
// are never touched and must be matched every time.
func TestIndexConcurrent(t *testing.T) {
	ix := NewIndex[int]()
	ix.Add("stable", "", "a/+/#", 1)
	ix.Add("stable", "g", "#", 2)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 3000 {
				c := fmt.Sprintf("w%d-%d", w, r.IntN(20))
				switch r.IntN(10) {
				case 0:
					ix.RemoveClient(c)
				case 1, 2, 3:
					ix.Remove(c, "", randFilter(r))
				case 4:
					ix.ClientSubscriptions(c, func(string, string, int) bool { return true })
				default:
					ix.Add(c, "", randFilter(r), i)
				}
			}
		})
	}
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 8))
			var dst []Entry[int]
			for range 3000 {
				name := "a/" + randName(r)
				dst = ix.Match(name, dst[:0])
				stable := 0
				for _, e := range dst {
					if e.Client == "stable" {
						stable++
					}
				}
				if stable != 2 {
					t.Errorf("Match(%q) found %d stable subscriptions", name, stable)
					return
				}
				_ = ix.Len()
			}
		})
	}
	wg.Wait()
	m := model{}
	ix.mu.RLock()
	for id, c := range ix.clients {
		for _, r := range c.refs {
			m[key{id, r.key.group, r.key.filter}] = r.n.subs[r.i].value
		}
	}
	ix.mu.RUnlock()
	checkIndex(t, ix, m)
}

func TestIndexInterest(t *testing.T) {
	ix := NewIndex[int]()
	var got []string
	ix.OnInterest(func(group, filter string, on bool) {
		got = append(got, fmt.Sprintf("%s|%s|%v", group, filter, on))
	})
	ix.Add("c1", "", "a/+", 1)
	ix.Add("c2", "", "a/+", 2)  // second subscriber: no change
	ix.Add("c1", "", "a/+", 3)  // replace: no change
	ix.Add("c1", "g", "a/+", 4) // a share group is its own interest
	ix.Add("c3", "g", "a/+", 5)
	ix.Remove("c1", "", "a/+")
	ix.Remove("c2", "", "a/+") // last normal subscriber gone
	ix.RemoveClient("c1")
	ix.RemoveClient("c3") // last group member gone
	want := []string{"|a/+|true", "g|a/+|true", "|a/+|false", "g|a/+|false"}
	if !slices.Equal(got, want) {
		t.Fatalf("interest events:\n got %q\nwant %q", got, want)
	}
	if ix.Len() != 0 {
		t.Fatalf("Len = %d, want 0", ix.Len())
	}
}

// Count agrees with Match, leaves out one client's subscriptions on
// request, and allocates nothing.
func TestIndexCount(t *testing.T) {
	ix := NewIndex[int]()
	ix.Add("a", "", "s/+/t", 1)
	ix.Add("a", "", "s/#", 1)
	ix.Add("b", "", "s/x/t", 1)
	ix.Add("b", "g", "s/x/t", 1)
	ix.Add("c", "", "#", 1)
	ix.Add("c", "", "$SYS/#", 1)
	for _, c := range []struct {
		name, except string
		want         int
	}{
		{"s/x/t", "", 5}, {"s/x/t", "a", 3}, {"s/x/t", "b", 3}, {"s/x/t", "nobody", 5},
		{"s", "", 2}, {"other", "", 1}, {"$SYS/x", "", 1}, {"$SYS/x", "c", 0},
	} {
		if got := ix.Count(c.name, c.except); got != c.want {
			t.Errorf("Count(%q, %q) = %d, want %d", c.name, c.except, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ix.Count("s/x/t", "a") }); n != 0 {
		t.Errorf("Count allocates %v times", n)
	}
}

// TestIndexGen: every change to the subscriptions changes the generation
// (a cached Match is reused only while it stays), and reads do not.
func TestIndexGen(t *testing.T) {
	ix := NewIndex[int]()
	seen := map[uint64]bool{ix.Gen(): true}
	step := func(what string, change bool) {
		t.Helper()
		g := ix.Gen()
		if seen[g] == change {
			t.Fatalf("%s: generation %d, changed %v, want changed %v", what, g, !seen[g], change)
		}
		seen[g] = true
	}
	ix.Add("a", "", "x/+", 1)
	step("add", true)
	ix.Add("a", "", "x/+", 2)
	step("replace", true)
	entries, gen := ix.MatchGen("x/y", nil)
	if len(entries) != 1 || entries[0].Value != 2 || gen != ix.Gen() {
		t.Fatalf("MatchGen = %v, %d; want the replaced value at generation %d", entries, gen, ix.Gen())
	}
	ix.Match("x/y", nil)
	ix.Count("x/y", "")
	step("reads", false)
	ix.Add("b", "g", "x/#", 3)
	step("add shared", true)
	if ix.Remove("b", "", "x/#") {
		t.Fatal("removed a subscription that does not exist")
	}
	step("remove nothing", false)
	ix.Remove("b", "g", "x/#")
	step("remove", true)
	ix.Add("c", "", "y", 4)
	step("add other", true)
	ix.RemoveClient("a")
	step("remove client", true)
}
