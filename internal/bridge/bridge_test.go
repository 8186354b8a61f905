package bridge

import (
	"testing"
	"time"
)

// TestBackoff: exponential from lo, capped at hi, each wait in the upper
// half of its step (jitter), and not all the same.
func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	f := Backoff(lo, hi)
	seen := map[time.Duration]bool{}
	for n := range 12 {
		step := min(lo<<n, hi)
		for range 50 {
			d := f(n)
			if d < step/2 || d > step {
				t.Fatalf("attempt %d: %v outside [%v, %v]", n, d, step/2, step)
			}
			seen[d] = true
		}
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct waits: no jitter", len(seen))
	}
}

// TestEchoes: a message sent out is recognised once when it comes back,
// another is not.
func TestEchoes(t *testing.T) {
	e := newEchoes()
	e.add("a/b", []byte("1"))
	e.add("a/b", []byte("1"))
	if e.take("a/b", []byte("2")) || e.take("a/c", []byte("1")) {
		t.Fatal("a different message taken for an echo")
	}
	if !e.take("a/b", []byte("1")) || !e.take("a/b", []byte("1")) {
		t.Fatal("the echoes of two sends not recognised")
	}
	if e.take("a/b", []byte("1")) {
		t.Fatal("a third copy taken for an echo of two sends")
	}
	if len(e.seen) != 0 {
		t.Errorf("%d entries left", len(e.seen))
	}
}

// TestMatchRemaps: prefixes are taken off the side the topic comes from.
func TestMatchRemaps(t *testing.T) {
	br := &Bridge{}
	br.rules = []rule{{out: true, in: false, localFilter: "sensors/#", remoteFilter: "site/sensors/#"},
		{out: false, in: true, localFilter: "remote/cmd/#", remoteFilter: "site/cmd/#"}}
	br.rules[0].RemotePrefix = "site/"
	br.rules[1].LocalPrefix, br.rules[1].RemotePrefix = "remote/", "site/"
	if r, rest, ok := br.match("sensors/t", true); !ok || rest != "sensors/t" || r.RemotePrefix+rest != "site/sensors/t" {
		t.Errorf("out: %v %q", ok, rest)
	}
	if r, rest, ok := br.match("site/cmd/x", false); !ok || r.LocalPrefix+rest != "remote/cmd/x" {
		t.Errorf("in: %v %q", ok, rest)
	}
	if _, _, ok := br.match("site/sensors/t", false); ok {
		t.Error("an out-only rule matched an incoming topic")
	}
	if _, _, ok := br.match("other", true); ok {
		t.Error("a topic outside the rules matched")
	}
}
