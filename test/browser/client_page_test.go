package browser

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/brokertest"
)

// persistentSession leaves an offline session behind for id.
func persistentSession(t *testing.T, addr, id string) {
	t.Helper()
	exp := uint32(3600)
	c, _ := brokertest.DialPaho(t, addr, id, &paho.Connect{CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	c.Close()
}

// The client search finds any of more than 200 sessions by client ID,
// user or address, a page at a time; the client page shows the session's
// subscriptions with their options, will, expiry, inflight and queue,
// flow-control figures, protocol and last disconnect reason, and its
// Disconnect and Delete session buttons work.
func TestDashboardClientSearch(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 1000)
	srv := startServer(t)
	for i := range 230 {
		persistentSession(t, srv.tcpAddr, fmt.Sprintf("bulk-%03d", i))
	}
	// The client to find: connected, with a user name, a delayed will, a
	// session expiry and a subscription with MQTT 5 options.
	nc, err := net.DialTimeout("tcp", srv.tcpAddr, brokertest.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	target := paho.NewClient(paho.ClientConfig{ClientID: "zz-meter-42", Conn: nc})
	cctx, cancel := context.WithTimeout(t.Context(), brokertest.Patience(t))
	defer cancel()
	exp, delay := uint32(900), uint32(120)
	if _, err := target.Connect(cctx, &paho.Connect{ClientID: "zz-meter-42", CleanStart: true, KeepAlive: 30, Username: "field-team", UsernameFlag: true,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &exp},
		WillMessage:    &paho.WillMessage{Topic: "meters/42/status", Payload: []byte("offline"), QoS: 1, Retain: true},
		WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}); err != nil {
		t.Fatal(err)
	}
	if _, err := target.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "meters/42/cmd/#", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 1}}}); err != nil {
		t.Fatal(err)
	}

	err = chromedp.Do(ctx,
		logIn(srv.url),
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-search"]`)),
		// Every session is searched, not a first page: 230 bulk ones.
		chromedp.SendKeys(chromedp.CSS(`#client-q`), "bulk-"),
		chromedp.Click(chromedp.CSS(`#client-search-form button[type=submit]`)),
		waitText(`#client-search-status`, is("1–50 of 230")),
		chromedp.Click(chromedp.CSS(`#client-next`)),
		waitText(`#client-search-status`, is("51–100 of 230")),
		chromedp.WaitVisible(chromedp.CSS(`#client-results tr[data-client-id="bulk-050"]`)),
		chromedp.Click(chromedp.CSS(`#client-next`)),
		chromedp.Click(chromedp.CSS(`#client-next`)),
		chromedp.Click(chromedp.CSS(`#client-next`)),
		waitText(`#client-search-status`, is("201–230 of 230")),
		chromedp.WaitVisible(chromedp.CSS(`#client-results tr[data-client-id="bulk-229"]`)),
	)
	if err != nil {
		t.Fatalf("paging: %v", err)
	}
	// By user name, in another case.
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#client-q`), "FIELD-team"),
		chromedp.Click(chromedp.CSS(`#client-search-form button[type=submit]`)),
		waitText(`#client-search-status`, is("1–1 of 1")),
		chromedp.WaitVisible(chromedp.CSS(`#client-results tr[data-client-id="zz-meter-42"]`)),
	)
	if err != nil {
		t.Fatalf("search by user: %v", err)
	}
	shot(t, ctx, `#v-search`, "view-client-search.png")

	fact := func(name string) string { return fmt.Sprintf(`#cp-facts div[data-fact=%q] dd`, name) }
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#client-results button[data-open="zz-meter-42"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#v-client[data-state="connected"]`)),
		waitText(`#cp-id`, is("zz-meter-42")),
		waitText(fact("Protocol"), is("MQTT 5")),
		waitText(fact("User"), is("field-team")),
		waitText(fact("Listener"), is("tcp")),
		waitText(fact("Session expiry"), contains("15m 0s")),
		waitText(fact("Will"), is("meters/42/status · QoS 1 · retained · 7 B · delay 120 s")),
		waitText(fact("Inflight"), contains("0 of ")),
		waitText(fact("Queued"), is("0")),
		waitText(fact("Held publishers"), is("0.0 s")),
		waitText(fact("Policy actions"), is("0")),
		waitText(fact("Last disconnect"), is("–")),
		waitText(`#cp-subs tr[data-filter="meters/42/cmd/#"]`, is("meters/42/cmd/#1yesyesif newall")),
	)
	if err != nil {
		t.Fatalf("client page: %v", err)
	}
	shot(t, ctx, `#v-client`, "view-client.png")

	// Disconnect: the page turns offline and names the reason; the will
	// waits for its delay.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#cp-kick`)),
		chromedp.WaitVisible(chromedp.CSS(`#v-client[data-state="offline"]`)),
		waitText(fact("Last disconnect"), contains("kicked by admin")),
	)
	if err != nil {
		t.Fatalf("kick: %v", err)
	}
	// Delete asks once more on the button, then the session is gone.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#cp-delete`)),
		waitText(`#cp-delete`, is("Confirm: delete session")),
		chromedp.Click(chromedp.CSS(`#cp-delete`)),
		waitText(`#cp-status`, is("session deleted")),
	)
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, ok := srv.b.Client("zz-meter-42"); ok {
		t.Error("session still held after Delete session")
	}
	// Opened from the connected clients list too.
	mqttClient(t, srv.tcpAddr, "live-one")
	err = chromedp.Do(ctx,
		clickLive(`#clients tr[data-client-id="live-one"] td.id`),
		waitText(`#cp-id`, is("live-one")),
		chromedp.WaitVisible(chromedp.CSS(`#v-client[data-state="connected"]`)),
	)
	if err != nil {
		t.Fatalf("open from the clients list: %v", err)
	}
}
