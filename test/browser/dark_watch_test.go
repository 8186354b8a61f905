package browser

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/brokertest"
)

// The page follows prefers-color-scheme: dark backgrounds and light text
// when the system asks for dark, light ones otherwise.
func TestDashboardDarkMode(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	srv := startServer(t)
	lum := func(sel, prop string) float64 {
		t.Helper()
		return mustEval[float64](t, ctx, `(() => { const m = getComputedStyle(document.querySelector('`+sel+`')).`+prop+`.match(/[\d.]+/g).map(Number);
			return (0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]) / 255; })()`)
	}
	if err := chromedp.Do(ctx, logIn(srv.url), waitText(`#m-connected`, is("1"))); err != nil {
		t.Fatal(err)
	}
	if bg, fg := lum("body", "backgroundColor"), lum(".card .label", "color"); bg < 0.8 || fg > 0.5 {
		t.Errorf("light scheme: background luminance %.2f, text %.2f", bg, fg)
	}
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	if bg, card, fg := lum("body", "backgroundColor"), lum(".card", "backgroundColor"), lum(".card .value", "color"); bg > 0.15 || card > 0.15 || fg < 0.7 {
		t.Errorf("dark scheme: background luminance %.2f, cards %.2f, text %.2f", bg, card, fg)
	}
	// The charts and tables follow too.
	if plot := lum("#chart rect.plot", "fill"); plot > 0.15 {
		t.Errorf("dark scheme: chart background luminance %.2f", plot)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	saveShot(t, "dashboard-dark.png", png)
}

// The subscribe-and-watch client beside the publish form lists what its
// own subscription brings (over the page's MQTT connection), newest
// first, with payload and flags; Unsubscribe stops it.
func TestDashboardWatchClient(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 1000)
	srv := startServer(t)
	pub, _ := mqttClient(t, srv.tcpAddr, "meter")
	pctx, cancel := context.WithTimeout(t.Context(), brokertest.Patience(t))
	defer cancel()
	send := func(topic, payload string, retain bool) {
		t.Helper()
		if _, err := pub.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	send("watch/retained", `{"temp":21.5}`, true)
	err := chromedp.Do(ctx,
		logIn(srv.url),
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-publish"]`)),
		chromedp.SendKeys(chromedp.CSS(`#watch-filter`), "watch/#"),
		chromedp.Click(chromedp.CSS(`#watch-sub`)),
		waitText(`#watch-status`, contains("watching watch/#")),
		// The retained message comes with the subscription.
		waitText(`#watch-list li[data-topic="watch/retained"]`, func(s string) bool {
			return strings.Contains(s, `"temp": 21.5`) && strings.Contains(s, "retained")
		}),
	)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	send("watch/live", "<b>not markup</b>", false)
	send("other/topic", "not watched", false)
	// The page's own publish form, seen by its watch.
	err = chromedp.Do(ctx,
		waitText(`#watch-list li[data-topic="watch/live"] .payload`, is("<b>not markup</b>")),
		chromedp.SetValue(chromedp.CSS(`#pub-topic`), "watch/from-page"),
		chromedp.SetValue(chromedp.CSS(`#pub-payload`), "hello"),
		chromedp.Click(chromedp.CSS(`#pub-send`)),
		waitText(`#watch-list li:first-child`, func(s string) bool { return strings.Contains(s, "watch/from-page") && strings.Contains(s, "hello") }),
	)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if n := mustEval[int](t, ctx, `document.querySelectorAll('#watch-list li[data-topic="other/topic"], #watch-list b').length`); n != 0 {
		t.Errorf("%d unwatched topics or markup elements in the list", n)
	}
	shot(t, ctx, `#v-publish`, "view-publish-watch.png")
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#watch-unsub`)),
		waitText(`#watch-status`, is("stopped watching watch/#")),
	)
	if err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	before := mustEval[int](t, ctx, `document.querySelectorAll('#watch-list li').length`)
	send("watch/after", "late", false)
	// The topic tree (its own subscription to #) shows it: the page got
	// the message, and the watch list must not have it.
	if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS(`#tree li[data-topic="watch"] li[data-topic="watch/after"]`))); err != nil {
		t.Fatalf("tree: %v", err)
	}
	if after := mustEval[int](t, ctx, `document.querySelectorAll('#watch-list li').length`); after != before {
		t.Errorf("list grew from %d to %d after Unsubscribe", before, after)
	}
}
