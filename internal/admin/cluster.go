package admin

import (
	"slices"
	"time"
)

// FeedCluster carries a ClusterFeed: the nodes, who owns how many
// sessions, and the nodes lost and rejoined.
const FeedCluster = "$SYS/starling/dashboard/cluster"

const (
	maxClusterEvents = 50
	// ownersEvery bounds how often the session owners are counted (a pass
	// over every session record) while the feed is watched.
	ownersEvery = 5 * time.Second
)

// ClusterFeed is the payload of FeedCluster. On a single node Clustered
// is false and Nodes holds this broker alone.
type ClusterFeed struct {
	Time      int64          `json:"t"`
	Clustered bool           `json:"clustered"`
	Name      string         `json:"name,omitempty"`
	Node      string         `json:"node,omitempty"`
	Ready     bool           `json:"ready"`
	Expected  int            `json:"expected_nodes"`
	Nodes     []ClusterNode  `json:"nodes"`
	Events    []ClusterEvent `json:"events"` // newest first
}

// ClusterNode is one node as this one sees it.
type ClusterNode struct {
	Name      string `json:"name"`
	Self      bool   `json:"self,omitempty"`
	Connected bool   `json:"connected"`
	// Ready is known for this node only (its replicated state and lease).
	Ready *bool `json:"ready,omitempty"`
	// Sessions it owns; -1 when not known.
	Sessions int `json:"sessions"`
}

// ClusterEvent is a change this node saw: "lost" (a node stopped
// answering), "rejoined" (it came back), "joined" (seen for the first
// time since this node started), "ready" and "not_ready" (this node).
type ClusterEvent struct {
	Time  int64  `json:"t"`
	Node  string `json:"node"`
	Event string `json:"event"`
}

// watchCluster notes lost, rejoined and joined nodes and this node's
// readiness changes; called at every tick, watched or not, so the events
// are there for a page opened later. The caller holds f.mu.
func (f *feed) watchCluster(now time.Time, st *ClusterStatus) {
	if st == nil {
		return
	}
	ms := now.UnixMilli()
	add := func(node, ev string) {
		f.clusterEvents = append([]ClusterEvent{{Time: ms, Node: node, Event: ev}}, f.clusterEvents...)
		if len(f.clusterEvents) > maxClusterEvents {
			f.clusterEvents = f.clusterEvents[:maxClusterEvents]
		}
	}
	if f.clusterSeen == nil {
		f.clusterSeen = make(map[string]bool)
		f.clusterWasReady = !st.Ready // a first "ready" or "not_ready"
	}
	live := make(map[string]bool, len(st.Peers))
	for _, p := range st.Peers {
		live[p] = true
		switch {
		case !f.clusterSeen[p]:
			add(p, "joined")
		case !f.clusterLive[p]:
			add(p, "rejoined")
		}
		f.clusterSeen[p] = true
	}
	for p := range f.clusterLive {
		if !live[p] {
			add(p, "lost")
		}
	}
	f.clusterLive = live
	if st.Ready != f.clusterWasReady {
		f.clusterWasReady = st.Ready
		if st.Ready {
			add(st.Node, "ready")
		} else {
			add(st.Node, "not_ready")
		}
	}
}

// publishCluster sends FeedCluster. The caller holds f.mu.
func (f *feed) publishCluster(now time.Time, st *ClusterStatus) error {
	out := ClusterFeed{Time: now.UnixMilli(), Nodes: []ClusterNode{}, Events: append([]ClusterEvent{}, f.clusterEvents...)}
	if st == nil {
		ready := true
		out.Ready, out.Expected = true, 1
		out.Nodes = append(out.Nodes, ClusterNode{Name: "this broker", Self: true, Connected: true, Ready: &ready, Sessions: f.src.Counters().Sessions})
		return f.publishJSON(FeedCluster, out)
	}
	if f.owners != nil && now.Sub(f.ownersAt) >= ownersEvery {
		f.ownerCounts, f.ownersAt = f.owners(), now
	}
	count := func(node string) int {
		if f.ownerCounts == nil {
			return -1
		}
		return f.ownerCounts[node]
	}
	out.Clustered, out.Name, out.Node, out.Ready, out.Expected = true, st.Name, st.Node, st.Ready, st.Expected
	ready := st.Ready
	out.Nodes = append(out.Nodes, ClusterNode{Name: st.Node, Self: true, Connected: true, Ready: &ready, Sessions: count(st.Node)})
	peers := slices.Sorted(slices.Values(st.Peers))
	for _, p := range peers {
		out.Nodes = append(out.Nodes, ClusterNode{Name: p, Connected: true, Sessions: count(p)})
	}
	for _, d := range slices.Sorted(slices.Values(st.Down)) {
		out.Nodes = append(out.Nodes, ClusterNode{Name: d, Sessions: count(d)})
	}
	return f.publishJSON(FeedCluster, out)
}
