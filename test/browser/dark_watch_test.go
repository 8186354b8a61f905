package browser

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
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
//
// The page's connection gets what the broker writes in batches, as from a
// busy broker, so packets written one after the other (an UNSUBACK, the
// SUBACK of the next subscription and its retained messages) reach the
// page in one piece.
func TestDashboardWatchClient(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 1000)
	srv := startServerWrapped(t, config.Default().Limits, nil, "127.0.0.1:0", nil, func(c net.Conn) net.Conn {
		return &batchConn{Conn: c}
	})
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

	// Subscribe again right after an Unsubscribe: the UNSUBACK, the SUBACK
	// and the retained message come in one batch, and the message is
	// handed to the page before MQTT.js runs the subscribe callback. It is
	// listed all the same.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#watch-clear`)),
		chromedp.SetValue(chromedp.CSS(`#watch-filter`), "watch/retained"),
		chromedp.Click(chromedp.CSS(`#watch-sub`)),
		waitText(`#watch-status`, contains("watching watch/retained")),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#watch-unsub').click(); document.querySelector('#watch-sub').click()`),
		waitText(`#watch-list`, func(s string) bool { return strings.Count(s, "watch/retained") == 2 }),
		waitText(`#watch-status`, contains("watching watch/retained")),
	)
	if err != nil {
		t.Fatalf("subscribe again: %v", err)
	}
}

// batchConn holds what is written to it for batchFor and then writes it
// at once: a WebSocket connection sends it as one frame.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	buf     []byte
	pending bool
	err     error
}

const batchFor = 100 * time.Millisecond

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.buf = append(c.buf, p...)
	if !c.pending {
		c.pending = true
		time.AfterFunc(batchFor, c.flush)
	}
	return len(p), nil
}

func (c *batchConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = false
	if len(c.buf) > 0 && c.err == nil {
		_, c.err = c.Conn.Write(c.buf)
	}
	c.buf = c.buf[:0]
}

func (c *batchConn) Close() error {
	c.flush()
	return c.Conn.Close()
}
