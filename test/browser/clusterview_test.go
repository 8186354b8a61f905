package browser

import (
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/starling-mqtt/starling/internal/admin"
	"github.com/starling-mqtt/starling/internal/config"
)

// The cluster view lists the nodes with their state and the sessions each
// owns, and shows a node lost and rejoined as it happens (the cluster's
// status comes from a stand-in for the cluster package, so the test can
// lose a node at will); a single node shows itself alone.
func TestDashboardClusterView(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	single := startServer(t)
	err := chromedp.Do(ctx,
		logIn(single.url),
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-cluster"]`)),
		waitText(`#cluster-summary`, is("single node: not clustered")),
		waitText(`#cluster-nodes tr[data-node="this broker"]`, is("this broker (this node)ready1")),
	)
	if err != nil {
		t.Fatalf("single node: %v", err)
	}

	var mu sync.Mutex
	st := admin.ClusterStatus{Name: "plant", Node: "n1", Ready: true, Peers: []string{"n2", "n3"}, Expected: 3}
	set := func(f func(*admin.ClusterStatus)) { mu.Lock(); f(&st); mu.Unlock() }
	srv := startServerWith(t, config.Default().Limits, nil, "127.0.0.1:0", func(o *admin.Options) {
		o.Cluster = func() *admin.ClusterStatus { mu.Lock(); defer mu.Unlock(); c := st; return &c }
		o.ClusterOwners = func() map[string]int { return map[string]int{"n1": 12, "n2": 30, "n3": 5} }
	})
	err = chromedp.Do(ctx,
		logIn(srv.url),
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-cluster"]`)),
		waitText(`#cluster-summary`, is("cluster plant: 3 of 3 nodes connected · this node n1 ready")),
		waitText(`#cluster-nodes tr[data-node="n1"]`, is("n1 (this node)ready12")),
		waitText(`#cluster-nodes tr[data-node="n2"]`, is("n2connected30")),
		chromedp.WaitVisible(chromedp.CSS(`#cluster-events li[data-node="n3"][data-event="joined"]`)),
	)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	set(func(s *admin.ClusterStatus) { s.Peers, s.Down, s.Ready = []string{"n2"}, []string{"n3"}, true })
	err = chromedp.Do(ctx,
		waitText(`#cluster-summary`, is("cluster plant: 2 of 3 nodes connected · this node n1 ready")),
		chromedp.WaitVisible(chromedp.CSS(`#cluster-nodes tr.down[data-node="n3"]`)),
		waitText(`#cluster-nodes tr[data-node="n3"]`, is("n3lost5")),
		chromedp.WaitVisible(chromedp.CSS(`#cluster-events li[data-node="n3"][data-event="lost"]`)),
	)
	if err != nil {
		t.Fatalf("node lost: %v", err)
	}
	set(func(s *admin.ClusterStatus) { s.Peers, s.Down = []string{"n2", "n3"}, nil })
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#cluster-events li[data-node="n3"][data-event="rejoined"]`)),
		waitText(`#cluster-nodes tr[data-node="n3"]`, is("n3connected5")),
	)
	if err != nil {
		t.Fatalf("node rejoined: %v", err)
	}
	shot(t, ctx, `#v-cluster`, "view-cluster.png")
}
