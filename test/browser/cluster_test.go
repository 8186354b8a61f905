package browser

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// The header names the node and counts the cluster's connected nodes on a
// cluster member (here a one-node cluster, which becomes ready by itself),
// and shows nothing of the kind on a single node.
func TestDashboardClusterHeader(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	login := func(srv *starling.Server) error {
		return chromedp.Do(ctx,
			chromedp.Navigate("http://"+srv.HTTPAddr().String()+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
			chromedp.Click(chromedp.CSS(`#login-button`)), // anonymous, the default
			chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
			waitText(`#version`, contains("starling")), // an overview arrived
		)
	}
	hidden := `(() => { const c = document.querySelector('#cluster'); return c.hidden && c.offsetParent === null; })()`

	single, _ := testutil.StartBroker(t, nil)
	if err := login(single); err != nil {
		t.Fatalf("single node: %v", err)
	}
	// Two overviews later the span is still hidden.
	if err := chromedp.Do(ctx, waitText(`#uptime`, func(s string) bool { return s != "" }), chromedp.Sleep(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if h, err := chromedp.Run(ctx, chromedp.Evaluate[bool](hidden)); err != nil || !h {
		txt, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#cluster').textContent`))
		t.Errorf("single node: #cluster shown (%q, %v)", txt, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	route := ln.Addr().String()
	ln.Close()
	member, _ := testutil.StartBroker(t, func(c *starling.Config) {
		c.Cluster.Name = fmt.Sprintf("dash-%d", time.Now().UnixNano())
		c.Cluster.Node = "n1"
		c.Cluster.Listen = route
	})
	select {
	case <-member.ClusterReady():
	case <-time.After(brokertest.Patience(t)):
		t.Fatalf("one-node cluster not ready after %v", brokertest.Patience(t))
	}
	if err := login(member); err != nil {
		t.Fatalf("cluster member: %v", err)
	}
	if err := chromedp.Do(ctx,
		waitText(`#cluster`, is("node n1 · 1/1 nodes")),
		chromedp.WaitVisible(chromedp.CSS(`#cluster[data-state="ok"]`)),
	); err != nil {
		t.Fatalf("cluster header: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#cluster').title`))
	if err != nil || title == "" {
		t.Errorf("cluster title %q (%v)", title, err)
	}
	shot(t, ctx, `header`, "dashboard-cluster-header.png")
	// The cluster view of a real member: the node, ready, with the
	// sessions the cluster's records give it (the page's own at least).
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-cluster"]`)),
		waitText(`#cluster-summary`, contains("1 of 1 nodes connected · this node n1 ready")),
		waitText(`#cluster-nodes tr[data-node="n1"]`, func(s string) bool {
			return strings.HasPrefix(s, "n1 (this node)ready") && s != "n1 (this node)ready0" && !strings.HasSuffix(s, "–")
		}),
		chromedp.WaitVisible(chromedp.CSS(`#cluster-events li[data-node="n1"][data-event="ready"]`)),
	); err != nil {
		t.Fatalf("cluster view: %v", err)
	}
}
