package cluster

import (
	"testing"
	"time"
)

// A node told that a session elsewhere is full holds the QoS 1/2
// publishes matching its filters until that node says it has room, or
// stops saying it is full for holdLapse; other topics are not held.
func TestPauseHoldsMatchingPublishesUntilRoomOrLapse(t *testing.T) {
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	for _, end := range []string{"room", "lapsed", "renewed"} {
		t.Run(end, func(t *testing.T) {
			var ps pauses
			start := time.Unix(1000, 0)
			ps.note(flowNotice{Node: "u2", Client: "c", Full: true, Filters: []string{"a/+", "b/#"}}, start)
			if ps.wait("c/1") != nil || ps.wait("a/1/2") != nil || ps.wait("$x/a") != nil {
				t.Fatal("a topic no paused filter matches is held")
			}
			w := ps.wait("b/1/2")
			if w == nil || closed(w) {
				t.Fatal("a publish matching a paused filter is not held")
			}
			switch end {
			case "room":
				ps.note(flowNotice{Node: "u2", Client: "c"}, start.Add(time.Second))
			case "lapsed":
				if nodes := ps.lapse(start.Add(holdLapse-time.Millisecond), false); len(nodes) != 0 || closed(w) {
					t.Fatalf("lapsed early: %v", nodes)
				}
				if nodes := ps.lapse(start.Add(holdLapse), false); len(nodes) != 1 || nodes[0] != "u2" {
					t.Fatalf("lapsed nodes %v, want u2", nodes)
				}
			case "renewed":
				// Renewed with other filters: the same wait, now for them.
				ps.note(flowNotice{Node: "u2", Client: "c", Full: true, Filters: []string{"d"}}, start.Add(holdLapse-time.Second))
				ps.lapse(start.Add(holdLapse), false)
				if closed(w) || ps.wait("b/1") != nil || ps.wait("d") == nil {
					t.Fatal("a renewed pause lapsed, or kept its old filters")
				}
				ps.note(flowNotice{Node: "u2", Client: "c"}, start.Add(holdLapse))
			}
			if !closed(w) || ps.wait("b/1") != nil {
				t.Fatalf("%s: the publish is still held", end)
			}
			if ps.held.Load() == 0 {
				t.Fatal("no held publish counted")
			}
		})
	}
}
