package broker

import (
	"testing"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/session"
)

// TestRouteMatchCacheFollowsSubscriptions: a reader that keeps to its
// topic reuses its last match, and every change to the subscriptions
// (a new one, a removed one, a topic that differs) is routed afresh.
func TestRouteMatchCacheFollowsSubscriptions(t *testing.T) {
	b := New(config.Default().Limits, nil)
	cl := func(id string) *client { return &client{id: id, sess: session.New(id, b.sessionLimitsFor(id))} }
	a, c := cl("a"), cl("c")
	b.subs.Add("a", "", "x/+", subValue{cl: a})
	hs := &holdSet{scratch: new(pubScratch)}
	route := func(name string, want int) {
		t.Helper()
		if n := b.routeTo(&session.Message{Topic: name}, nil, sharedAll, hs); n != want {
			t.Fatalf("publish on %q reached %d sessions, want %d", name, n, want)
		}
	}
	route("x/y", 1)
	route("x/y", 1) // from the cache
	b.subs.Add("c", "", "x/#", subValue{cl: c})
	route("x/y", 2)
	b.subs.Remove("a", "", "x/+")
	route("x/y", 1)
	route("x/y/z", 1)
	b.subs.RemoveClient("c")
	route("x/y/z", 0)
	route("x/y", 0)
}
