package browser

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
)

// historyLen asks the broker's management API how many 1 s points its
// history holds.
func historyLen(t *testing.T, url string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url+"api/v1/history?range=1h", nil)
	req.SetBasicAuth("admin", "secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct{ T []int64 }
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return len(h.T)
}

// The charts draw the broker's own history: a page opened later shows
// the time before it at once; they have a time axis and several series;
// and a broker that was down leaves a gap, with the points from before it
// kept.
func TestDashboardChartsRestart(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 1100)
	// Restarted on the same HTTP address below: a port outside the
	// ephemeral range, which no other test's outgoing connection takes
	// meanwhile.
	srv := startServerOn(t, config.Default().Limits, nil, freeport.Addr(t))
	pub, _ := mqttClient(t, srv.tcpAddr, "ticker")
	stopPub := steadyPublisher(t, pub, 100*time.Millisecond, map[string][]byte{"plant/a": []byte("12345")})
	defer stopPub()
	for historyLen(t, srv.url) < 6 {
		select {
		case <-t.Context().Done():
			t.Fatal("no history")
		case <-time.After(200 * time.Millisecond):
		}
	}
	loginAt := time.Now().UnixMilli()
	err := chromedp.Do(ctx,
		logIn(srv.url),
		// Points from before the page was opened: only the broker's
		// history can have them.
		waitJS(fmt.Sprintf(`window.starling.chartPoints().filter((p) => p.t < %d).length >= 5`, loginAt-1000),
			`JSON.stringify(window.starling.chartPoints().map((p) => p.t))`),
		waitText(`#m-connected`, is("2")), // live overviews too
		waitJS(`Number(document.querySelector('#chart').dataset.peak) >= 5`, `document.querySelector('#chart').dataset.peak`),
		waitJS(`document.querySelectorAll('#chart text.tick').length >= 4`, `document.querySelector('#chart').innerHTML`),
		waitJS(`['#chart path.in', '#chart path.out', '#chart path.dropped', '#chart-conn path.conn', '#chart-bytes path.bin', '#chart-bytes path.bout']
			.every((s) => (document.querySelector(s).getAttribute('d') || '').includes('L'))`, `document.querySelector('#charts').innerHTML.slice(0, 400)`),
	)
	if err != nil {
		t.Fatalf("charts from history: %v", err)
	}

	// The broker goes down, for longer than the page takes to call its
	// figures stale, and another starts on the same address.
	stopPub()
	downAt := time.Now().UnixMilli()
	srv.stop()
	if err := chromedp.Do(ctx, waitJS(`document.querySelector('#app').classList.contains('stale')`, `document.querySelector('#app').className`)); err != nil {
		t.Fatalf("stale: %v", err)
	}
	upAt := time.Now().UnixMilli()
	srv2 := startServerOn(t, config.Default().Limits, nil, srv.httpAddr)
	_ = srv2
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		waitJS(`!document.querySelector('#app').classList.contains('stale')`, `document.querySelector('#app').className`),
		// Points from both brokers, none from while it was down, and the
		// gap drawn.
		waitJS(fmt.Sprintf(`(() => { const p = window.starling.chartPoints();
			return p.some((x) => x.t < %[1]d) && p.filter((x) => x.t > %[2]d).length >= 2 && !p.some((x) => x.t > %[1]d + 1500 && x.t < %[2]d); })()`, downAt, upAt),
			`JSON.stringify(window.starling.chartPoints().map((p) => p.t))`),
		waitJS(`Number(document.querySelector('#chart').dataset.gaps) >= 1 && ((document.querySelector('#line-in').getAttribute('d') || '').match(/M/g) || []).length >= 2`,
			`document.querySelector('#chart').dataset.gaps + ' ' + document.querySelector('#line-in').getAttribute('d')`),
	)
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	shot(t, ctx, `#charts`, "view-charts.png")

	// The day's range comes from the 1-minute ring.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`button.range[data-range="24h"]`)),
		waitJS(`document.querySelector('button.range[data-range="24h"]').getAttribute('aria-pressed') === 'true'`, `''`),
		waitJS(`document.querySelectorAll('#chart text.tick').length >= 4`, `document.querySelector('#chart').innerHTML`),
	)
	if err != nil {
		t.Fatalf("24 h: %v", err)
	}
}
