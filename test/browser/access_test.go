package browser

import (
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// A user who may log in over MQTT but is not an admin: the page says so
// at once, with no browser password prompt (the API's 401 to the page
// carries no WWW-Authenticate challenge), and the live views keep
// working.
func TestDashboardNotAdmin(t *testing.T) {
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
