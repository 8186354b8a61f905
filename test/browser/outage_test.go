package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// While the broker is out of reach the figures grey out (they are the last
// known ones) and the chart shows the gap; when it is back, they are live
// again and the gap stays in the chart between the two stretches.
func TestDashboardOutage(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	srv := startServer(t)
	err := chromedp.Do(ctx,
		signIn(srv.url),
		waitText(`#m-connected`, is("1")),
		// Two overviews or more: a line.
		waitJS(`(document.querySelector('#line-in').getAttribute('d') || '').includes('L')`, `document.querySelector('#line-in').getAttribute('d')`),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	if js := `document.querySelector('#app').classList.contains('stale')`; mustEval[bool](t, ctx, js) {
		t.Fatal("figures shown as stale while live")
	}

	// The broker goes out of reach: the page's connection drops and new
	// ones are refused.
	outageStart := time.Now().UnixMilli()
	srv.wsDown.Store(true)
	kicked := false
	for _, c := range srv.b.Clients() {
		if strings.HasPrefix(c.ClientID, "starling-dashboard-") {
			kicked = srv.b.Kick(c.ClientID)
		}
	}
	if !kicked {
		t.Fatal("the page's connection was not found")
	}
	err = chromedp.Do(ctx,
		waitJS(`document.querySelector('#app').classList.contains('stale')`, `document.querySelector('#app').className`),
		chromedp.WaitVisible(chromedp.CSS(`#stale-note`)),
		waitText(`#stale-note`, contains("the values shown are the last known")),
		waitJS(`Number(getComputedStyle(document.querySelector('#m-connected')).opacity) < 1`,
			`getComputedStyle(document.querySelector('#m-connected')).opacity`),
		waitJS(`Number(document.querySelector('#chart').dataset.gaps) >= 1`, `document.querySelector('#chart').dataset.gaps`),
	)
	if err != nil {
		t.Fatalf("outage not shown: %v", err)
	}
	if st := mustEval[string](t, ctx, `document.querySelector('#status').dataset.state`); st == "live" {
		t.Errorf("badge says live during the outage")
	}
	screenshot(t, ctx, "dashboard-outage.png")

	// Back: live again. The broker kept sampling while the page could not
	// reach it: the stretch is filled from its history (a broker that was
	// down leaves a gap: TestDashboardChartsRestart).
	outageEnd := time.Now().UnixMilli()
	srv.wsDown.Store(false)
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		waitJS(`!document.querySelector('#app').classList.contains('stale')`, `document.querySelector('#app').className`),
		chromedp.WaitNotVisible(chromedp.CSS(`#stale-note`)),
		waitJS(fmt.Sprintf(`window.starling.chartPoints().filter((p) => p.t > %d && p.t < %d).length >= %d`,
			outageStart, outageEnd, (outageEnd-outageStart)/1000-2),
			`JSON.stringify(window.starling.chartPoints().map((p) => p.t))`),
	)
	if err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

// mustEval evaluates a JavaScript expression in the page.
func mustEval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// At 1400 px the client list has room for all its columns: the Disconnect
// button is whole, not cut by the table's scroll box.
func TestDashboardWideClients(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1400, 900)
	srv := startServer(t)
	mqttClient(t, srv.tcpAddr, "a-client-with-a-rather-long-id-7")
	err := chromedp.Do(ctx,
		signIn(srv.url),
		chromedp.WaitVisible(chromedp.CSS(`#clients button.kick[data-client-id="a-client-with-a-rather-long-id-7"]`)),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	const js = `(() => {
		const b = document.querySelector('#clients button.kick[data-client-id="a-client-with-a-rather-long-id-7"]');
		const box = b.closest('.scroll');
		const br = b.getBoundingClientRect(), sr = box.getBoundingClientRect();
		return JSON.stringify({right: br.right, boxRight: sr.right, scroll: box.scrollWidth, client: box.clientWidth});
	})()`
	var got struct{ Right, BoxRight, Scroll, Client float64 }
	if err := json.Unmarshal([]byte(mustEval[string](t, ctx, js)), &got); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, `#v-clients`, "view-clients-1400.png")
	if got.Right > got.BoxRight+0.5 || got.Scroll > got.Client {
		t.Errorf("Disconnect cut off at 1400 px: button right edge %.1f, box right edge %.1f; table %v px wide in a %v px box",
			got.Right, got.BoxRight, got.Scroll, got.Client)
	}
}
