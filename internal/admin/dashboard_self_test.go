package admin

import (
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
)

// The dashboard's own connection is told apart from the broker's load: a
// topic trace leaves out its deliveries (counting them), and the top and
// clients feeds mark it.
func TestDashboardOwnTrafficMarked(t *testing.T) {
	b, addr := startBroker(t)
	f := New(b, Options{}).feed
	pageID := DashboardClientPrefix + "1a2b"
	page := dial(t, addr, pageID)
	page.subscribe(t, "$SYS/starling/dashboard/#")
	page.subscribe(t, "plant/#") // the page's topic tree
	dev := dial(t, addr, "device")
	dev.subscribe(t, "plant/#")
	b.SetTrace(&broker.Trace{Filter: "plant/#"})

	t0 := time.Now()
	if err := f.tick(t0); err != nil { // starts the top sampling
		t.Fatal(err)
	}
	pub := dial(t, addr, "pub")
	pub.publish(t, "plant/temp", "21", false)
	waitFor(t, "both receivers got the message", func() bool {
		n := 0
		for _, c := range b.Traffics() {
			if (c.ClientID == "device" || c.ClientID == pageID) && c.MessagesOut > 0 {
				n++
			}
		}
		return n == 2
	})
	if err := f.tick(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// The feeds come in the order the tick publishes them.

	var cf ClientsFeed
	nextJSON(t, page, FeedClients, &cf)
	for _, c := range cf.Connected {
		if c.Dashboard != (c.ClientID == pageID) {
			t.Errorf("clients feed: %s marked dashboard=%v", c.ClientID, c.Dashboard)
		}
	}
	var top TopFeed
	nextJSON(t, page, FeedTop, &top)
	marked := map[string]bool{}
	for _, c := range top.Clients {
		marked[c.ClientID] = c.Dashboard
	}
	if d, ok := marked[pageID]; !ok || !d || marked["pub"] || marked["device"] {
		t.Errorf("top clients: %+v; want the page marked as a dashboard and nobody else", top.Clients)
	}
	var tf TraceFeed
	nextJSON(t, page, FeedTrace, &tf)
	var to []string
	for _, e := range tf.Events {
		if isDashboard(e.ClientID) {
			t.Errorf("topic trace shows the dashboard's own packet: %+v", e)
		}
		if e.Direction == "out" {
			to = append(to, e.ClientID)
		}
	}
	if len(to) != 1 || to[0] != "device" || tf.Hidden == 0 {
		t.Errorf("trace deliveries to %v, %d hidden; want the device's only, and the page's counted as hidden", to, tf.Hidden)
	}

}
