package browser

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
)

// A user who may log in over MQTT but is not an admin: the page says so
// at once, with no browser password prompt (the API's 401 to the page
// carries no WWW-Authenticate challenge), and the live views keep
// working.
func TestDashboardNotAdmin(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	srv := startServer(t) // admin/secret is the admin; the broker lets anyone in

	var mu sync.Mutex
	var challenged, apiAnswers []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if ev, ok := ev.(*network.EventResponseReceived); ok && strings.Contains(ev.Response.URL, "/api/v1/") {
			mu.Lock()
			defer mu.Unlock()
			apiAnswers = append(apiAnswers, ev.Response.URL)
			for k := range ev.Response.Headers {
				if strings.EqualFold(k, "WWW-Authenticate") {
					challenged = append(challenged, ev.Response.URL)
				}
			}
		}
	}); err != nil {
		t.Fatal(err)
	}

	err := chromedp.Do(ctx,
		chromedp.Navigate(srv.url),
		chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
		chromedp.SendKeys(chromedp.CSS(`#user`), "viewer"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "pw"),
		chromedp.Click(chromedp.CSS(`#login-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		waitText(`#admin-note`, contains("viewer, but this user is not an admin")),
		chromedp.WaitVisible(chromedp.CSS(`#admin-note`)),
		waitText(`#retained-status`, is("this user is not an admin")),
		// The live feeds still come.
		waitText(`#m-connected`, is("1")),
	)
	if err != nil {
		t.Fatalf("non-admin login: %v", err)
	}

	// Others connect: the list follows, without Disconnect buttons; an
	// action the API refuses says why.
	mqttClient(t, srv.tcpAddr, "probe-1")
	err = chromedp.Do(ctx,
		waitText(`#m-connected`, is("2")),
		chromedp.WaitVisible(chromedp.CSS(`#clients tr[data-client-id="probe-1"]`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#clients button.kick[data-client-id="probe-1"]`)),
		chromedp.SetValue(chromedp.CSS(`#pub-topic`), "x/y"),
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-publish"]`)),
		chromedp.Click(chromedp.CSS(`#pub-send`)),
		waitText(`#publish-status`, is("publish failed: this user is not an admin")),
	)
	if err != nil {
		t.Fatalf("non-admin views: %v", err)
	}
	screenshot(t, ctx, "dashboard-not-admin.png")

	mu.Lock()
	defer mu.Unlock()
	if len(apiAnswers) == 0 {
		t.Error("the page never asked the management API")
	}
	if len(challenged) > 0 {
		t.Errorf("API answers to the page carried a WWW-Authenticate challenge: %v", challenged)
	}
}

// The overview's counts agree with the views: the Retained card leaves
// out the broker's $SYS tree (the retained view lists 1), the
// Subscriptions card leaves out this page's own subscriptions, and the
// page's own connection is marked as such in the client list.
func TestDashboardCounts(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	srv := startServer(t) // publishes the retained $SYS/broker tree every second
	dev, _ := mqttClient(t, srv.tcpAddr, "device")
	pctx, cancel := context.WithTimeout(ctx, brokertest.Patience(t))
	defer cancel()
	if _, err := dev.Subscribe(pctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cmd/device", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Publish(pctx, &paho.Publish{Topic: "state/device", QoS: 1, Retain: true, Payload: []byte("on")}); err != nil {
		t.Fatal(err)
	}
	err := chromedp.Do(ctx,
		signIn(srv.url),
		// The $SYS tree is there: the page has received some of it.
		waitJS(`document.querySelectorAll('#sys tr').length > 5`, `String(document.querySelectorAll('#sys tr').length)`),
		waitText(`#retained-status`, is("1 on #")),
		waitText(`#m-retained`, is("1")),
		waitText(`#m-subs`, is("1")),
		waitText(`#clients tr[data-client-id^="starling-dashboard-"] td.id .badge`, is("this page")),
	)
	if err != nil {
		t.Fatalf("counts: %v", err)
	}
	if ms, _ := srv.b.RetainedMatching("$SYS/#", 0); len(ms) == 0 {
		t.Fatal("no retained $SYS tree: the test shows nothing")
	}
}

// viewerACL lets the user "viewer" read plant/# only: no $SYS.
type viewerACL struct{}

func (viewerACL) Allow(c *broker.ClientInfo, act broker.Action, topic string) bool {
	return c.Username != "viewer" || !strings.HasPrefix(topic, "$")
}

// A non-admin whom the ACL keeps from the $SYS feeds: the page says what
// was refused, and the topic tree still shows what the user may read.
func TestDashboardNotAdminACL(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	srv := startServerAuthz(t, config.Default().Limits, viewerACL{})
	err := chromedp.Do(ctx,
		chromedp.Navigate(srv.url),
		chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
		chromedp.SendKeys(chromedp.CSS(`#user`), "viewer"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "pw"),
		chromedp.Click(chromedp.CSS(`#login-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		waitText(`#admin-note`, contains("this user is not an admin")),
		waitText(`#acl-note`, contains("does not let this user read $SYS/starling/dashboard/# and $SYS/broker/#: no live figures")),
		chromedp.WaitVisible(chromedp.CSS(`#acl-note`)),
	)
	if err != nil {
		t.Fatalf("non-admin login under an ACL: %v", err)
	}
	dev, _ := mqttClient(t, srv.tcpAddr, "device")
	stop := steadyPublisher(t, dev, 200*time.Millisecond, map[string][]byte{"plant/temp": []byte("21")})
	defer stop()
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#tree li[data-topic="plant/temp"]`)),
		waitText(`#tree li[data-topic="plant/temp"] code.payload`, is("21")),
	)
	if err != nil {
		t.Fatalf("topic tree for a non-admin: %v", err)
	}
	screenshot(t, ctx, "dashboard-not-admin-acl.png")
}
