package admin

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// The cluster feed lists the nodes with the sessions each owns, and the
// nodes lost and rejoined (and this node's readiness) as events, kept
// while nobody watches; a single node is shown alone.
func TestClusterFeedEvents(t *testing.T) {
	b, addr := startBroker(t)
	var mu sync.Mutex
	st := &ClusterStatus{Name: "c", Node: "n1", Ready: true, Peers: []string{"n2", "n3"}, Expected: 3}
	a := New(b, Options{Checker: StaticChecker{"admin", "s3cret"}, Cluster: func() *ClusterStatus {
		mu.Lock()
		defer mu.Unlock()
		c := *st
		return &c
	}, ClusterOwners: func() map[string]int { return map[string]int{"n1": 4, "n2": 7, "n3": 1} }})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	set := func(peers, down []string, ready bool) {
		mu.Lock()
		st.Peers, st.Down, st.Ready = peers, down, ready
		mu.Unlock()
	}
	now := time.Now()
	tick := func() {
		now = now.Add(time.Second)
		if err := a.feed.tick(now); err != nil {
			t.Fatal(err)
		}
	}
	tick()
	set([]string{"n2"}, []string{"n3"}, true)
	tick()
	set([]string{"n2"}, []string{"n3"}, false)
	tick()
	set([]string{"n2", "n3"}, nil, true)
	tick()
	w := dial(t, addr, "watcher")
	w.subscribe(t, FeedCluster)
	tick()
	var f ClusterFeed
	if err := json.Unmarshal(w.next(t, FeedCluster).Payload, &f); err != nil {
		t.Fatal(err)
	}
	var evs []string
	for _, e := range f.Events {
		evs = append(evs, e.Node+" "+e.Event)
	}
	if got, want := strings.Join(evs, ", "), "n1 ready, n3 rejoined, n1 not_ready, n3 lost, n1 ready, n3 joined, n2 joined"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	if !f.Clustered || len(f.Nodes) != 3 || f.Nodes[0].Name != "n1" || !f.Nodes[0].Self || f.Nodes[0].Sessions != 4 || f.Nodes[1].Sessions != 7 || !f.Nodes[2].Connected {
		t.Errorf("nodes %+v", f.Nodes)
	}
	_, body, _ := do(t, srv, "GET", "/api/v1/cluster", creds, "")
	if !strings.Contains(body, `"n2": 7`) || !strings.Contains(body, `"event": "rejoined"`) {
		t.Errorf("API: %s", body)
	}

	// A single node: itself, with its sessions.
	b2, addr2 := startBroker(t)
	a2 := New(b2, Options{})
	w2 := dial(t, addr2, "watcher")
	w2.subscribe(t, FeedCluster)
	if err := a2.feed.tick(time.Now()); err != nil {
		t.Fatal(err)
	}
	var s ClusterFeed
	if err := json.Unmarshal(w2.next(t, FeedCluster).Payload, &s); err != nil || s.Clustered || len(s.Nodes) != 1 || s.Nodes[0].Sessions != 1 {
		t.Errorf("single node: %v %+v", err, s)
	}
}
