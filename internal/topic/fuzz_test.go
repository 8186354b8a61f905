package topic

import (
	"slices"
	"strings"
	"testing"
)

// refValid is an independent, strings.Split-based statement of ValidateFilter.
func refValid(f string) bool {
	if f == "" || len(f) > MaxLen || strings.IndexByte(f, 0) >= 0 {
		return false
	}
	if strings.HasPrefix(f, "$share/") {
		parts := strings.SplitN(f, "/", 3)
		if len(parts) < 3 || parts[1] == "" || strings.ContainsAny(parts[1], "+#") || parts[2] == "" {
			return false
		}
		f = parts[2]
	}
	lv := strings.Split(f, "/")
	for i, l := range lv {
		if strings.Contains(l, "#") && (l != "#" || i != len(lv)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

// refMatch is an independent, strings.Split-based statement of Match for
// valid non-shared filters.
func refMatch(filter, name string) bool {
	if strings.HasPrefix(name, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl, nl := strings.Split(filter, "/"), strings.Split(name, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(nl) || (f != "+" && f != nl[i]) {
			return false
		}
	}
	return len(fl) == len(nl)
}

func FuzzValidateFilter(f *testing.F) {
	for _, s := range []string{
		"sport/tennis/player1/#", "sport/+", "+/+", "/+", "$SYS/#", "#", "+/monitor/Clients",
		"$share/g/x", "$share/g/#", "sport/tennis#", "sport+", "$share//x", "$share/g", "$share/g/",
		"", "/", "a\x00", "$share/g+/x", "#/", "+#", "$share/g/$share/h/+",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, filter string) {
		err := ValidateFilter(filter)
		if want := refValid(filter); (err == nil) != want {
			t.Fatalf("ValidateFilter(%q) = %v, reference says valid=%v", filter, err, want)
		}
		g, inner, ok := ParseShared(filter)
		if ok != strings.HasPrefix(filter, "$share/") {
			t.Fatalf("ParseShared(%q) ok = %v", filter, ok)
		}
		if ok && "$share/"+g+"/"+inner != filter && "$share/"+g != filter {
			t.Fatalf("ParseShared(%q) = %q, %q does not rebuild it", filter, g, inner)
		}
		if err == nil && ValidateName(filter) == nil && !strings.ContainsAny(filter, "+#") && !ok {
			// A wildcard-free filter is also a name, and matches itself.
			if !Match(filter, filter) {
				t.Fatalf("Match(%q, itself) = false", filter)
			}
		}
		// Never panics, valid or not.
		Match(filter, filter)
		Match(filter, "a/b")
		Match(inner, "$a")
	})
}

// FuzzMatch adds the valid filters among the '\n'-separated filters to an
// index (as shared subscriptions when they have a $share prefix) and checks
// that Index.Match, brute-force Match and the reference matcher agree.
func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.filter+"\nsport/#\n$share/g/+/+", tt.name)
	}
	f.Add("#\n+\n$SYS/#\n$share/g/#", "$SYS/x")
	f.Add("a/+/c\na/b/#\n+/+/+\n/", "a/b/c")
	f.Add("sport/tennis#\n$share//x\nsport+", "sport/tennis")
	f.Fuzz(func(t *testing.T, filters, name string) {
		ix := NewIndex[int]()
		m := model{}
		for i, fl := range strings.SplitN(filters, "\n", 32) {
			Match(fl, name) // never panics, even for invalid filters
			if ValidateFilter(fl) != nil {
				continue
			}
			g, inner, ok := ParseShared(fl)
			if !ok {
				inner = fl
			}
			if got, want := Match(inner, name), refMatch(inner, name); got != want {
				t.Fatalf("Match(%q, %q) = %v, reference %v", inner, name, got, want)
			}
			c := string(rune('a' + i%3))
			ix.Add(c, g, inner, i)
			m[key{c, g, inner}] = i
		}
		checkIndex(t, ix, m)
		got, want := matchSorted(ix, name), m.match(name)
		if !slices.Equal(got, want) {
			t.Fatalf("Index.Match(%q)\n got %+v\nwant %+v", name, got, want)
		}
		for k := range m {
			if !ix.Remove(k.client, k.group, k.filter) {
				t.Fatalf("Remove(%+v) = false", k)
			}
		}
		if ix.Len() != 0 || ix.root.children != nil || ix.root.plus != nil || ix.root.hash != nil || len(ix.clients) != 0 {
			t.Fatal("index not empty after removing everything")
		}
	})
}
